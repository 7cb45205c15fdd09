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
