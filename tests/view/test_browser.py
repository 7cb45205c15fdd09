"""`tomosweep view` in a real browser: headless Chromium reads the page while a driver writes the store.

The assertions are on what a person sees: the numbers written in the heatmaps' cells
(SVG text, placed against the axes' tick labels), the per-cell table, the trial count and
the workers line — not on the page's data model.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time

import pytest
from test_page import new_store, trial

from tomosweep.view import serve, write_live
from tomosweep.view.snapshot import heat_label

pytestmark = pytest.mark.browser

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)


def _unavailable() -> str | None:
    """Why no browser can be driven here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "no Chromium (Debian: apt-get install chromium chromium-driver; .ci/run does)"
    if not shutil.which("chromedriver"):
        return "no chromedriver (Debian: apt-get install chromium-driver; .ci/run does)"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("TOMOSWEEP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TOMOSWEEP_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


# Bokeh draws every widget inside shadow roots: walk them all.
_DEEP = """
const deep = (root, selector, out = []) => {
    root.querySelectorAll(selector).forEach(e => out.push(e));
    root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) deep(e.shadowRoot, selector, out); });
    return out;
};
"""

_SPANS = _DEEP + "return Object.fromEntries(deep(document, '[data-ts]').map(e => [e.dataset.ts, e.textContent]));"

# every SVG plot's texts with the centre of the box a person sees them in
_SVG_TEXTS = (
    _DEEP
    + """
return deep(document, 'svg').map(svg => Array.from(svg.querySelectorAll('text')).map(t => {
    const r = t.getBoundingClientRect();
    return [t.textContent, r.x + r.width / 2, r.y + r.height / 2];
})).filter(texts => texts.length);
"""
)

_TABLES = (
    _DEEP
    + """
return deep(document, '.slick-header').map(header => {
    const root = header.getRootNode();
    const names = Array.from(root.querySelectorAll('.slick-column-name')).map(e => e.textContent);
    const rows = Array.from(root.querySelectorAll('.slick-row'))
        .sort((a, b) => a.getBoundingClientRect().y - b.getBoundingClientRect().y)
        .map(row => Array.from(row.querySelectorAll('.slick-cell')).map(c => c.textContent));
    return {names, rows};
});
"""
)

_SELECTED = _DEEP + "return deep(document, 'div').map(d => d.textContent).filter(t => t.includes('chemical tilts'));"


def spans(driver) -> dict[str, str]:
    return driver.execute_script(_SPANS)


def heatmaps(driver, methods) -> dict[str, dict[tuple[int, int], str]]:
    """Each method's heatmap as drawn: ``{(n_haadf, n_chem): text}``, each text placed by the
    tick labels nearest to it on the screen (so the orientation is checked with the values)."""
    out = {}
    for texts in driver.execute_script(_SVG_TEXTS):
        names = {t for t, _, _ in texts}
        method = next((m for m in methods if m in names), None)
        if method is None:
            continue
        unique = {(t, round(x), round(y)) for t, x, y in texts}  # the SVG backend writes each text twice
        values = [(t, x, y) for t, x, y in unique if t == "–" or (len(t) == 4 and t[1] == "." and t[0].isdigit())]
        if not values:
            continue
        left = min(x for _, x, _ in values)
        bottom = max(y for _, _, y in values)
        # a tick label sits level with a row (left of the cells) or under a column (below them)
        y_ticks = [(int(t), y) for t, x, y in unique if t.isdigit() and x < left and y < bottom + 3]
        x_ticks = [(int(t), x) for t, x, y in unique if t.isdigit() and y > bottom and x > left - 3]
        cell_at = {
            (t, x, y): (min(y_ticks, key=lambda k: abs(k[1] - y))[0], min(x_ticks, key=lambda k: abs(k[1] - x))[0])
            for t, x, y in values
        }
        out[method] = {cell: t for (t, _, _), cell in cell_at.items()}
        out[f"{method}:at"] = {cell: (x, y) for (_, x, y), cell in cell_at.items()}
        out[f"{method}:ticks"] = {"y": sorted(y_ticks, key=lambda k: k[1]), "x": sorted(x_ticks, key=lambda k: k[1])}
    return out


def tables(driver) -> list[dict]:
    return driver.execute_script(_TABLES)


def wait_for(predicate, *, timeout=30.0, what="the page"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not show up within {timeout:g} s")
        time.sleep(0.2)


# a fixed sequence of trials: (method, n_haadf, n_chem, nrmse or None for failed, weight)
SEQUENCE = [
    ("sirt", 5, 3, 0.61, 4),
    ("fused", 5, 3, 0.33, 0.8),
    ("sirt", 9, 6, 0.44, 12),
    ("fused", 9, 6, 0.21, 2.0),
    ("sirt", 5, 6, 0.52, 7),
    ("fused", 5, 6, None, 9.0),
    ("sirt", 5, 3, 0.48, 9),
    ("fused", 9, 3, 0.27, 1.5),
    ("sirt", 9, 3, 0.57, 3),
    ("fused", 9, 6, 0.18, 2.6),
    ("sirt", 9, 6, 0.39, 18),
    ("fused", 5, 3, 0.29, 1.1),
    ("sirt", 5, 6, 0.5, 11),
    ("fused", 5, 6, 0.31, 0.6),
    ("sirt", 9, 3, 0.55, 5),
    ("fused", 9, 3, 0.244, 3.3),
    ("sirt", 5, 3, 0.47, 14),
    ("fused", 9, 6, 0.2, 1.9),
    ("sirt", 9, 6, 0.41, 25),
    ("fused", 5, 3, 0.3, 0.9),
]


def _record(entry):
    method, h, c, nrmse, weight = entry
    if nrmse is None:
        return trial(method, h, c, status="failed", weight=weight)
    return trial(method, h, c, nrmse, weight=weight)


def test_the_page_follows_a_store_being_written(browser, tmp_path):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    store = new_store(tmp_path / "s.zarr")  # held open for writing, locked: the test is the driver
    for entry in SEQUENCE[:4]:
        store.append(_record(entry))
    started = time.time()

    def heartbeat(running):
        write_live(
            store.path,
            {"pid": os.getpid(), "host": "test", "started": started, "updated": time.time(), "state": "running"}
            | {"workers": 2, "threads": 2, "running": running, "budget": 40, "dashboard": None},
        )

    heartbeat({"fused/9/3": 1, "sirt/5/6": 1})
    stop = threading.Event()

    def driver_loop():
        for entry in SEQUENCE[4:]:
            if stop.wait(0.3):
                return
            store.append(_record(entry))
            heartbeat({f"{entry[0]}/{entry[1]}/{entry[2]}": 1})

    writer = threading.Thread(target=driver_loop, name="test-driver")
    with serve(store.path, refresh_s=0.5) as server:
        try:
            browser.get(server.url)
            writer.start()
            first = int(wait_for(lambda: spans(browser).get("done"), what="the trial count"))
            later = int(
                wait_for(lambda: (n := int(spans(browser).get("done", 0))) > first and n, what="a growing trial count")
            )
            assert 4 <= first < later <= len(SEQUENCE)
            assert spans(browser)["workers"] == "2"  # from the driver's heartbeat beside the store
            writer.join(timeout=30)
            assert store.n_committed == len(SEQUENCE)
            wait_for(lambda: spans(browser).get("done") == str(len(SEQUENCE)), what="the last trial")
        finally:
            stop.set()
            if writer.is_alive():
                writer.join()

        seen = spans(browser)
        assert (seen["budget"], seen["failed"], seen["pruned"]) == ("40", "1", "0")

        # the heatmaps: each cell's text is the store's best NRMSE to two decimals, in its place
        expected = {}
        for method in store.methods:
            best = store.maps(method)["best_nrmse"]
            expected[method] = {
                (h, c): heat_label(best[i, j]) for i, h in enumerate(store.n_haadf) for j, c in enumerate(store.n_chem)
            }
        drawn = heatmaps(browser, store.methods)  # drawn in the same refresh as the last count
        assert drawn["fused"] == expected["fused"] and drawn["sirt"] == expected["sirt"]
        assert drawn["fused"][(9, 6)] == "0.18" and drawn["fused"][(5, 6)] == "0.31"
        assert [t for t, _ in drawn["fused:ticks"]["y"]] == [9, 5]  # most HAADF tilts on top, as in the export
        assert [t for t, _ in drawn["fused:ticks"]["x"]] == [3, 6]

        # the per-cell table: done / budget and the best NRMSE of every (method, cell)
        cells = next(t for t in tables(browser) if "done / budget" in t["names"])
        assert len(cells["rows"]) == 8
        for row in cells["rows"]:
            method, cell, done, failed, pruned, running, best = row[:7]
            h, c = (int(v) for v in cell.split(" × "))
            i, j = store.cell_index(h, c)
            maps = store.maps(method)
            assert done == f"{maps['n_trials'][i, j]} / 5" and failed == str(maps["n_failed"][i, j])
            value = maps["best_nrmse"][i, j]
            assert best == ("–" if math.isnan(value) else f"{value:.4f}")

        # selecting a cell in a heatmap (a click where its number is drawn) shows its trials, of every method
        x, y = drawn["fused:at"][(9, 3)]
        click = ActionBuilder(browser)
        click.pointer_action.move_to_location(round(x), round(y))
        click.pointer_action.click()
        click.perform()
        wait_for(
            lambda: any("9 HAADF × 3 chemical tilts" in t for t in browser.execute_script(_SELECTED)),
            what="the selected cell",
        )
        in_cell = [e for e in SEQUENCE if (e[1], e[2]) == (9, 3)]
        trials = wait_for(
            lambda: next(
                (t for t in tables(browser) if "status" in t["names"] and len(t["rows"]) == len(in_cell)), None
            ),
            what="the cell's trials table",
        )
        assert sorted(r[trials["names"].index("method")] for r in trials["rows"]) == sorted(e[0] for e in in_cell)
        nrmse = sorted(r[trials["names"].index("nrmse")] for r in trials["rows"])
        assert nrmse == sorted(f"{e[3]:.4f}" for e in in_cell)
    store.close()
