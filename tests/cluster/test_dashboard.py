"""The dashboard link `tomosweep run` prints serves Dask's real dashboard (bokeh is a dependency)."""

from __future__ import annotations

import re
import urllib.request

from tomosweep.cluster import ClusterSettings, open_cluster


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return response.read().decode()


def test_the_printed_dashboard_link_serves_the_dashboard_not_the_needs_bokeh_page():
    with open_cluster(ClusterSettings(backend="local", n_workers=1)) as conn:  # as `tomosweep run` starts it
        link = conn.dashboard  # the link `tomosweep run` prints
        assert link and link.startswith("http://127.0.0.1:") and link.endswith("/status")
        page = _get(link)
        scripts = re.findall(r'src="(static/js/bokeh[^"?]*\.js)', page)
        bokeh_js = _get(link.rsplit("/", 1)[0] + "/" + scripts[0]) if scripts else ""
        plots = _get(link.replace("/status", "/individual-plots.json"))
    # without bokeh, distributed serves a page that says "Dask needs bokeh>=… for the dashboard"
    assert "needs bokeh" not in page and "pip install" not in page
    assert "<title>Dask Diagnostic UI</title>" in page
    assert "static/js/bokeh.min.js" in scripts and "Bokeh" in bokeh_js  # BokehJS is served with it
    assert "Individual Task Stream" in plots and "Individual Progress" in plots  # the scheduler's bokeh plots


def test_the_link_names_127_0_0_1_when_the_scheduler_listens_on_a_cluster_interface():
    """A batch study's scheduler listens on ``interface`` (e.g. ib0), its dashboard on 127.0.0.1 only."""
    from types import SimpleNamespace

    from tomosweep.cluster.connect import Connection

    client = SimpleNamespace(dashboard_link="http://10.213.57.1:41234/status")
    started_here = Connection(client=client, backend="slurm", description="", cluster=object())
    assert started_here.dashboard == "http://127.0.0.1:41234/status"
    # a scheduler started elsewhere (backend "address") serves its own dashboard: its link stays
    elsewhere = Connection(client=client, backend="address", description="", cluster=None)
    assert elsewhere.dashboard == "http://10.213.57.1:41234/status"
