"""The live page's Bokeh document: heatmaps, the cells table, a selected cell, the progress line."""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import html
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import TomosweepError
from tomosweep.view.heartbeat import local_link
from tomosweep.view.snapshot import (
    RATE_WINDOW_S,
    Snapshot,
    StoreReader,
    best_so_far,
    cell_table,
    cell_trials,
    colour_scale,
    heat_label,
    progress,
)

log = logging.getLogger(__name__)

#: a drawer of one cell's landscape: (store path, (n_haadf, n_chem)) -> [(caption, PNG bytes), …]
Landscape = Callable[[Path, tuple[int, int]], Sequence[tuple[str, bytes]]]


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return "< 1 min"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _ago(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{_duration(seconds)} ago"


def _span(key: str, text: Any) -> str:
    """A value on the page, tagged so that a test (or a script) can read what a person sees."""
    return f'<span data-ts="{key}">{html.escape(str(text))}</span>'


def status_html(snap: Snapshot, now: float | None = None) -> str:
    """The page's progress line(s)."""
    p = progress(snap, now)
    state = p["state"]
    rate = "–" if not math.isfinite(p["rate_per_min"]) else f"{p['rate_per_min']:.1f}"
    lines = [
        f"{_span('done', p['done'])} of {_span('budget', p['budget'])} trials "
        f"({_span('failed', p['failed'])} failed, {_span('pruned', p['pruned'])} pruned), "
        f"{_span('running', p['running'])} running"
    ]
    if state == "running":
        lines.append(
            f"{_span('rate', rate)} trials/min over the last {RATE_WINDOW_S / 60:.0f} min · "
            f"{_span('eta', _duration(p['eta_s']))} to the budget · "
            f"{_span('workers', p['workers'])} workers connected ({p['threads']} threads)"
        )
        link = local_link(p["dashboard"])
        driver = f"driver running, heartbeat {_ago(p['heartbeat_age_s'])}"
        if link:
            driver += f' · <a href="{html.escape(link)}" target="_blank">Dask dashboard</a>'
        lines.append(driver)
    else:
        words = {
            "finished": "the driver finished",
            "stopped": "the driver stopped before the budget was spent (resume it to go on)",
            "gone": f"no driver: its last heartbeat was {_ago(p['heartbeat_age_s'])}",
            "unknown": "no driver has published a heartbeat beside this store",
        }
        lines.append(
            f"{_span('state', words.get(state, state))} · {rate} trials/min over the study · "
            f"last trial {_ago(time.time() - p['last_trial_at'] if math.isfinite(p['last_trial_at']) else math.nan)}"
        )
    if snap.note:
        lines.append(f"<i>reading the store failed just now, showing the view before: {html.escape(snap.note)}</i>")
    stamp = dt.datetime.fromtimestamp(snap.read_at).strftime("%H:%M:%S")
    lines.append(f"<small>read {html.escape(str(snap.path))} at {_span('read-at', stamp)} (read-only)</small>")
    return "<br>".join(lines)


class Page:
    """One browser session's document: built once, refreshed by a periodic callback."""

    def __init__(
        self,
        doc: Any,
        reader: StoreReader,
        *,
        refresh_s: float,
        landscape: Landscape | None,
        executor: concurrent.futures.Executor,
    ) -> None:
        self.doc, self.reader, self.landscape, self.executor = doc, reader, landscape, executor
        self.refresh_s = refresh_s
        self.cell: tuple[int, int] | None = None
        self.grid: tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]] | None = None
        self.snap: Snapshot | None = None
        self._landscape_for: tuple[int, int] | None = None
        # what the heatmaps and tables show: (trials, trials in flight, cells stopped early)
        self._shown: tuple | None = None
        self._syncing = False
        from bokeh.models import Div

        self.title = Div(text="<h2>tomosweep view</h2>")
        self.header = Div(text="", sizing_mode="stretch_width")
        doc.title = "tomosweep view"
        doc.add_root(self._waiting())
        self.refresh()
        doc.add_periodic_callback(self.refresh, int(refresh_s * 1000))

    def _waiting(self) -> Any:
        from bokeh.models import Div

        self.wait_div = Div(text=f"waiting for the store {html.escape(str(self.reader.path))} to be created …")
        return self.wait_div

    # -------------------------------------------------------------- layout

    def _build(self, snap: Snapshot) -> None:
        """Lay the page out for this store's grid and methods (rebuilt when they change)."""
        from bokeh.layouts import column, row
        from bokeh.models import Div

        figures = self._build_heatmaps(snap)
        cells_table = self._build_cells_table(snap)
        self._build_selected_cell(snap)
        self.layout = column(
            self.title,
            self.header,
            self.heat_title,
            row(*figures),
            Div(text="<h3>per cell</h3>"),
            cells_table,
            Div(text="<h3>selected cell</h3>"),
            row(self.cell_div, self.curve),
            self.trials_table,
            self.landscape_div,
            sizing_mode="stretch_width",
        )
        self.doc.clear()
        self.doc.add_root(self.layout)

    def _build_heatmaps(self, snap: Snapshot) -> list[Any]:
        """One NRMSE map per method, drawn as the export draws them, with one shared colour bar."""
        from bokeh.models import (
            ColorBar,
            Div,
            LinearColorMapper,
            PrintfTickFormatter,
        )
        from bokeh.palettes import Viridis256

        self.grid = (snap.n_haadf, snap.n_chem, snap.methods)
        self.doc.title = f"tomosweep view — {snap.name}"
        self.title.text = f"<h2>tomosweep view — {html.escape(snap.name)}</h2>"
        # reversed viridis, as matplotlib's viridis_r in the export: low (good) NRMSE is yellow
        self.mapper = LinearColorMapper(palette=list(reversed(Viridis256)), low=0.0, high=1.0, nan_color="white")
        self.heat_sources: dict[str, Any] = {}
        x_factors = [str(c) for c in snap.n_chem]
        y_factors = [str(h) for h in snap.n_haadf]  # a y FactorRange starts at the bottom: origin="lower"
        side = max(220, 60 * len(x_factors) + 90)
        figures = [self._heatmap(snap, k, method, x_factors, y_factors, side) for k, method in enumerate(snap.methods)]
        # one colour bar for every panel, as the export's (its scale is shared)
        bar = ColorBar(
            color_mapper=self.mapper,
            title="best mean NRMSE",
            width=14,
            formatter=PrintfTickFormatter(format="%.3f"),  # never mistaken for a cell's two-decimal value
        )
        figures[-1].add_layout(bar, "right")
        figures[-1].width += 110
        self.heat_title = Div(text=f"<h3>{html.escape(snap.name)}: best NRMSE over the tilt grid</h3>")
        return figures

    def _heatmap(
        self, snap: Snapshot, k: int, method: str, x_factors: list[str], y_factors: list[str], side: int
    ) -> Any:
        """One method's map: cells coloured on the shared scale, each value written in its cell."""
        from bokeh.models import ColumnDataSource, FactorRange, HoverTool, TapTool
        from bokeh.plotting import figure

        source = ColumnDataSource(self._heat_data(snap, method, cell_table(snap), (0.0, 1.0)), name=f"heat-{method}")
        fig = figure(
            title=method,
            name=f"heatmap-{method}",
            x_range=FactorRange(*x_factors),
            y_range=FactorRange(*y_factors),
            width=side + (70 if k == 0 else 0),
            height=max(220, 50 * len(y_factors) + 90),
            tools="",
            toolbar_location=None,
            output_backend="svg",  # each cell's value is a <text> a person (and a test) can read
        )
        cells = fig.rect(
            x="x",
            y="y",
            width=1,
            height=1,
            source=source,
            fill_color={"field": "nrmse", "transform": self.mapper},
            line_color="white",
            selection_line_color="red",
            selection_line_width=3,  # pyright: ignore[reportCallIssue]  bokeh's stubs list colours and alphas only
            nonselection_fill_alpha=1.0,
            nonselection_line_color="white",
        )
        fig.text(
            x="x",
            y="y",
            text="label",
            source=source,
            text_align="center",
            text_baseline="middle",
            text_font_size="11pt",
            text_color="colour",
            nonselection_text_alpha=1.0,  # a selected cell is outlined; the others stay readable
        )
        fig.add_tools(
            TapTool(renderers=[cells]),
            HoverTool(
                renderers=[cells],
                tooltips=[
                    ("cell", "@y HAADF × @x chemical tilts"),
                    ("best NRMSE", "@label"),
                    ("trials", "@done of @budget (@failed failed, @pruned pruned, @running running)"),
                    ("best weights", "@weights"),
                    ("stopped early", "@stopped"),
                ],
            ),
        )
        fig.xaxis.axis_label = "chemical tilts"
        if k == 0:
            fig.yaxis.axis_label = "HAADF tilts"
        fig.grid.visible = False
        fig.outline_line_color = None
        source.selected.on_change("indices", self._on_heat_select)
        self.heat_sources[method] = source
        return fig

    def _build_cells_table(self, snap: Snapshot) -> Any:
        """Per cell: trials done / failed / pruned / running, best NRMSE and weights, why it stopped early;
        a row selects the cell."""
        from bokeh.models import ColumnDataSource, DataTable, NumberFormatter, TableColumn

        number = NumberFormatter(format="0.0000", nan_format="–")
        self.cells_source = ColumnDataSource(self._cells_data(snap), name="cells")
        self.cells_source.selected.on_change("indices", self._on_table_select)
        cells_table = DataTable(
            source=self.cells_source,
            name="cells-table",
            columns=[
                TableColumn(field="method", title="method", width=110),
                TableColumn(field="cell", title="HAADF × chem", width=100),
                TableColumn(field="trials", title="done / budget", width=100),
                TableColumn(field="failed", title="failed", width=60),
                TableColumn(field="pruned", title="pruned", width=60),
                TableColumn(field="running", title="running", width=60),
                TableColumn(field="best_nrmse", title="best NRMSE", formatter=number, width=90),
                TableColumn(field="best_weights", title="best weights", width=360),
                TableColumn(field="stopped", title="stopped early", width=300),
            ],
            index_position=None,
            reorderable=False,
            width=1240,
            height=min(420, 28 * (len(self.cells_source.data["method"]) + 1) + 8),
            sortable=True,
        )
        return cells_table

    def _build_selected_cell(self, snap: Snapshot) -> None:
        """The selected cell's best-so-far curve, trials table and landscape (empty until a selection)."""
        from bokeh.models import ColumnDataSource, DataTable, Div
        from bokeh.palettes import Category10_10
        from bokeh.plotting import figure

        palette = {m: Category10_10[k % 10] for k, m in enumerate(snap.methods)}
        self.curve = figure(
            width=440,
            height=280,
            title="best-so-far NRMSE",
            x_axis_label="trial in the cell",
            y_axis_label="best NRMSE",
            tools="pan,wheel_zoom,reset",
            name="curve",
        )
        self.curve_sources = {}
        for method in snap.methods:
            src = ColumnDataSource({"trial": [], "best": [], "nrmse": []})
            self.curve.step(x="trial", y="best", source=src, mode="after", color=palette[method], legend_label=method)
            self.curve.scatter(x="trial", y="nrmse", source=src, color=palette[method], alpha=0.35, size=5)
            self.curve_sources[method] = src
        self.curve.legend.location = "top_right"
        self.curve.visible = False  # until a cell is selected (an empty plot has no range to show)
        self.cell_div = Div(text="<i>select a cell in a heatmap or the table</i>", width=440)
        self.trials_source = ColumnDataSource({}, name="trials")
        self.trials_table = DataTable(
            source=self.trials_source, columns=[], index_position=None, width=1100, height=260
        )
        self.landscape_div = Div(text="", sizing_mode="stretch_width")

    # -------------------------------------------------------------- data

    @staticmethod
    def _heat_data(snap: Snapshot, method: str, table: dict[str, list[Any]], scale: tuple[float, float]) -> dict:
        rows = [k for k, m in enumerate(table["method"]) if m == method]
        middle = (scale[0] + scale[1]) / 2
        values = [table["best_nrmse"][k] for k in rows]
        return {
            "x": [str(table["n_chem"][k]) for k in rows],
            "y": [str(table["n_haadf"][k]) for k in rows],
            "nrmse": values,
            "label": [heat_label(v) for v in values],
            "colour": ["white" if math.isfinite(v) and v > middle else "black" for v in values],
            "done": [table["done"][k] for k in rows],
            "budget": [table["budget"][k] for k in rows],
            "failed": [table["failed"][k] for k in rows],
            "pruned": [table["pruned"][k] for k in rows],
            "running": [table["running"][k] for k in rows],
            "weights": [table["best_weights"][k] or "–" for k in rows],
            "stopped": [table["stopped"][k] or "no" for k in rows],
        }

    @staticmethod
    def _cells_data(snap: Snapshot, table: dict[str, list[Any]] | None = None) -> dict:
        table = table or cell_table(snap)
        return {
            "method": table["method"],
            "n_haadf": table["n_haadf"],
            "n_chem": table["n_chem"],
            "cell": [f"{h} × {c}" for h, c in zip(table["n_haadf"], table["n_chem"], strict=True)],
            "trials": [f"{d} / {b}" for d, b in zip(table["done"], table["budget"], strict=True)],
            "failed": table["failed"],
            "pruned": table["pruned"],
            "running": table["running"],
            "best_nrmse": table["best_nrmse"],
            "best_weights": table["best_weights"],
            "stopped": table["stopped"],
        }

    def refresh(self) -> None:
        """Read the store and heartbeat again and redraw what changed (a periodic callback)."""
        snap = self.reader.read_or_last()
        if snap is None:
            return  # the store does not exist yet (``--wait``), or cannot be read: keep waiting
        if self.grid != (snap.n_haadf, snap.n_chem, snap.methods):
            self._build(snap)  # first read, or a grid grown by `resume --extend`
            self._shown = None
        self.snap = snap
        self.header.text = status_html(snap)
        shown = (snap.n_committed, tuple(sorted(snap.running().items())), tuple(sorted(snap.stopped.items())))
        if shown == self._shown:
            return  # nothing new: the browser keeps what it drew (and a selection in progress)
        self._shown = shown
        table = cell_table(snap)
        scale = colour_scale(table["best_nrmse"])
        self.mapper.update(low=scale[0], high=scale[1])
        for method, source in self.heat_sources.items():
            source.data = self._heat_data(snap, method, table, scale)
        self.cells_source.data = self._cells_data(snap, table)
        if self.cell is not None:
            self._show_cell(self.cell, draw_landscape=False)

    # -------------------------------------------------------------- selection

    def _on_heat_select(self, attr: str, old: list[int], new: list[int]) -> None:
        if self._syncing or not new or self.snap is None:
            return
        source = next(s for s in self.heat_sources.values() if s.selected.indices == new)
        k = new[0]
        self._select((int(np.asarray(source.data["y"])[k]), int(np.asarray(source.data["x"])[k])))

    def _on_table_select(self, attr: str, old: list[int], new: list[int]) -> None:
        if self._syncing or not new:
            return
        data = self.cells_source.data
        self._select((int(np.asarray(data["n_haadf"])[new[0]]), int(np.asarray(data["n_chem"])[new[0]])))

    def _select(self, cell: tuple[int, int]) -> None:
        self.cell = cell
        self._syncing = True
        try:
            for source in self.heat_sources.values():  # the cell is outlined in every method's map
                at = zip(source.data["y"], source.data["x"], strict=True)
                source.selected.indices = [k for k, (h, c) in enumerate(at) if (int(h), int(c)) == cell]
        finally:
            self._syncing = False
        self._show_cell(cell, draw_landscape=True)

    def _show_cell(self, cell: tuple[int, int], *, draw_landscape: bool) -> None:
        snap = self.snap
        if snap is None:
            return
        table = cell_table(snap)
        lines = [f"<b>{cell[0]} HAADF × {cell[1]} chemical tilts</b>"]
        for k, method in enumerate(table["method"]):
            if (table["n_haadf"][k], table["n_chem"][k]) != cell:
                continue
            lines.append(
                f"<b>{html.escape(method)}</b>: {table['done'][k]} of {table['budget'][k]} done, "
                f"{table['failed'][k]} failed, {table['pruned'][k]} pruned, {table['running'][k]} running; "
                f"best NRMSE {heat_label(table['best_nrmse'][k])}"
                + (f" ({table['best_nrmse'][k]:.4f})" if math.isfinite(table["best_nrmse"][k]) else "")
            )
            if table["best_weights"][k]:
                lines.append(f"&nbsp;&nbsp;best weights: {html.escape(table['best_weights'][k])}")
            if table["stopped"][k]:
                lines.append(f"&nbsp;&nbsp;stopped before its cap: {html.escape(table['stopped'][k])}")
        self.cell_div.text = "<br>".join(lines)
        self.curve.visible = True
        for method, src in self.curve_sources.items():
            trial, best = best_so_far(snap, cell, method)
            cols = snap.columns
            rows = (
                (cols["n_haadf"] == cell[0])
                & (cols["n_chem"] == cell[1])
                & (cols["method"] == snap.methods.index(method))
            )
            nrmse = np.where(cols["status"][rows] == 0, cols["nrmse"][rows], np.nan)
            src.data = {"trial": trial, "best": best, "nrmse": nrmse}
        data: dict[str, Any] = cell_trials(snap, cell)  # Any: bokeh's DataDict wants Sequence, not list, columns
        if [c.field for c in self.trials_table.columns] != list(data):
            self.trials_table.columns = [_trial_column(name, snap) for name in data]
        self.trials_source.data = data
        if draw_landscape and self.landscape is not None and self._landscape_for != cell:
            self._draw_landscape(cell, self.landscape)

    def _draw_landscape(self, cell: tuple[int, int], landscape: Landscape) -> None:
        self._landscape_for = cell
        self.landscape_div.text = f"<i>drawing the optimiser's landscape at {cell[0]} × {cell[1]} …</i>"
        future = self.executor.submit(landscape, self.reader.path, cell)

        def done(fut: concurrent.futures.Future) -> None:
            self.doc.add_next_tick_callback(lambda: self._show_landscape(cell, fut))

        future.add_done_callback(done)

    def _show_landscape(self, cell: tuple[int, int], fut: concurrent.futures.Future) -> None:
        if self.cell != cell:
            return  # another cell was selected meanwhile
        try:
            images = fut.result()
        except TomosweepError as exc:
            self.landscape_div.text = f"<i>no landscape at {cell[0]} × {cell[1]}: {html.escape(str(exc))}</i>"
            return
        except Exception as exc:  # a plotting failure must not take the page down
            log.warning("drawing the landscape at %s failed: %s", cell, exc, exc_info=True)
            self.landscape_div.text = f"<i>drawing the landscape failed: {html.escape(str(exc))}</i>"
            return
        parts = [f"<h3>the optimiser's landscape at {cell[0]} × {cell[1]}</h3>"]
        for caption, png in images:
            encoded = base64.b64encode(png).decode()
            parts.append(
                f'<figure style="display:inline-block;margin:0 1em 1em 0"><img src="data:image/png;base64,{encoded}" '
                f'style="max-width:640px"><figcaption>{html.escape(caption)}</figcaption></figure>'
            )
        self.landscape_div.text = "".join(parts)


def _trial_column(name: str, snap: Snapshot) -> Any:
    from bokeh.models import NumberFormatter, StringFormatter, TableColumn

    if name == "nrmse":
        formatter = NumberFormatter(format="0.0000", nan_format="–")
    elif name in snap.param_names or name == "wall_time_s":
        formatter = NumberFormatter(format="0.[00000]", nan_format="–")
    else:
        formatter = StringFormatter()
    return TableColumn(
        field=name, title=name.replace("_", " "), formatter=formatter, width=280 if name == "error" else 90
    )
