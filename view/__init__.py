"""A live page over a sweep store: ``tomosweep view S.zarr``.

A Bokeh server application that reads the store read-only — :meth:`SweepStore.open`
without ``writable`` takes no lock and writes nothing — so it is safe beside a driver
that is writing, and just as useful after the study ended. Every few seconds it opens
the store again and shows:

- the NRMSE heatmap per method, drawn like the export's (:func:`~tomosweep.results.export.heatmap_figure`):
  chemical tilts along x, HAADF tilts along y with the fewest at the bottom, reversed
  viridis on one colour scale shared by all methods, the best mean NRMSE written in each
  cell to two decimals ("–" where a cell has no finished trial);
- per (method, cell): trials done of the budget, failed, pruned, running, the best NRMSE
  and the best weights; selecting a cell (in a heatmap or the table) shows its
  best-so-far curve, its trials and, where the caller supplies a drawer, the landscape
  the optimiser sees;
- the study's progress: trials per minute, time to the budget, and the workers
  connected, read from the driver's heartbeat beside the store.

One module per job: :mod:`~tomosweep.view.heartbeat` (the driver's heartbeat file, its
writer and reader), :mod:`~tomosweep.view.snapshot` (what the page shows, computed from
the store's committed rows), :mod:`~tomosweep.view.page` (the Bokeh document) and
:mod:`~tomosweep.view.server` (the Bokeh server).

This package depends on no other tomosweep package but :mod:`tomosweep.results` and the
error family; the sweep layer passes in what it knows (the landscape drawer).
"""

from tomosweep.view.heartbeat import Heartbeat, live_path, read_live, write_live
from tomosweep.view.server import ViewServer, serve

__all__ = ["Heartbeat", "ViewServer", "live_path", "read_live", "serve", "write_live"]
