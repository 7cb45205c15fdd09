"""The sweep store (zarr v3) and its exports: heatmaps, tables, convergence plots.

Depends on no other tomosweep package: the store's contract is in
:mod:`tomosweep.results.store`, and everything here reads through it.
"""

from tomosweep.results.store import FAILED, OK, PRUNED, SweepStore, TrialRecord, pruning_summary

__all__ = ["FAILED", "OK", "PRUNED", "SweepStore", "TrialRecord", "pruning_summary"]
