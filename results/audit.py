"""What can be wrong with a store, found without trusting it: the checks behind
:meth:`~tomosweep.results.store.SweepStore.audit` (``tomosweep check``) and ``check --repair``.

The audit reads every trial row chunk by chunk and asks of each committed row whether it holds
values a trial can hold (:func:`rows_intact`), compares the maps with the intact rows
(:func:`map_difference`; ``--repair`` writes :func:`merged_maps`, which never lowers a count nor
loses a best), and checks each stored replicate entry (:func:`replicate_problem`). Its verdict is a
:class:`StoreAudit`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StoreAudit:
    """What :meth:`SweepStore.audit` found: one line per finding, and the rows concerned."""

    findings: tuple[str, ...]
    damaged_rows: frozenset[int]  # committed rows whose values cannot be trusted
    uncommitted: int  # intact written rows right after the committed ones (--repair counts them in)
    lowered: bool  # more than one written row after the counter: n_committed was lowered

    @property
    def blocks_resume(self) -> bool:
        """A resume would trust damaged rows or write over written ones."""
        return bool(self.damaged_rows) or self.lowered


def map_difference(stored: Mapping[str, np.ndarray], fresh: Mapping[str, np.ndarray]) -> tuple[bool, bool]:
    """(the stored maps lack something the trials hold, the stored maps hold more than the trials)."""
    with np.errstate(invalid="ignore"):
        lacks = bool(np.any(stored["n_trials"] < fresh["n_trials"]) or np.any(stored["n_failed"] < fresh["n_failed"]))
        lacks |= bool(np.any(np.isfinite(fresh["best_nrmse"]) & ~(stored["best_nrmse"] <= fresh["best_nrmse"])))
        more = bool(np.any(stored["n_trials"] > fresh["n_trials"]) or np.any(stored["n_failed"] > fresh["n_failed"]))
        more |= bool(np.any(np.isfinite(stored["best_nrmse"]) & ~(stored["best_nrmse"] >= fresh["best_nrmse"])))
    return lacks, more


def merged_maps(stored: Mapping[str, np.ndarray], fresh: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Maps that keep everything either holds: counts at their larger value, each cell's best at
    the lower NRMSE with its parameters. What ``check --repair`` writes: it never lowers a count
    nor raises (loses) a best."""
    out = {name: np.array(values) for name, values in stored.items()}
    out["n_trials"] = np.maximum(stored["n_trials"], fresh["n_trials"])
    out["n_failed"] = np.maximum(stored["n_failed"], fresh["n_failed"])
    with np.errstate(invalid="ignore"):
        better = np.isfinite(fresh["best_nrmse"]) & ~(stored["best_nrmse"] <= fresh["best_nrmse"])
    out["best_nrmse"][better] = fresh["best_nrmse"][better]
    out["best_params"][better] = fresh["best_params"][better]
    return out


def rows_intact(values: Mapping[str, np.ndarray], n_methods: int) -> np.ndarray:
    """Per row: do its columns hold values a trial can hold?"""
    method, status = values["method"].astype(int), values["status"].astype(int)
    nrmse = values["nrmse"].astype(float)
    finished = (status == 0) | (status == 2)
    with np.errstate(invalid="ignore"):
        ok = (method >= 0) & (method < n_methods) & np.isin(status, (0, 1, 2))
        ok &= (values["n_haadf"] > 0) & (values["n_chem"] > 0) & (values["iterations"] >= 0)
        wall = values["wall_time_s"].astype(float)
        ok &= np.isfinite(wall) & (wall >= 0)
        ok &= ~finished | (np.isfinite(nrmse) & (nrmse >= 0))
        ok &= (status != 0) | np.all(np.isfinite(values["nrmse_elements"].astype(float)), axis=1)
        ok &= np.any(np.isfinite(values["params"].astype(float)), axis=1)
    for r in np.flatnonzero(ok):
        try:
            ok[r] = isinstance(json.loads(str(values["meta"][r])), dict)
        except ValueError:
            ok[r] = False
    return ok


REPLICATE_KEY = re.compile(r"([A-Za-z][\w-]*)/([1-9]\d*)/([1-9]\d*)(?:/snr×([0-9.eE+-]+))?")


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def replicate_problem(key: str, entry: Any, methods: Sequence[str], param_names: Sequence[str]) -> str:
    """Why one replicate entry is malformed ("" if it is not): the shape ``record_replicates`` writes."""
    match = REPLICATE_KEY.fullmatch(key)
    if match is None:
        return "its key is not method/n_haadf/n_chem[/snr×F]"
    if match.group(1) not in methods:
        return f"method {match.group(1)!r} is not in this store"
    if not isinstance(entry, Mapping):
        return f"the entry is a {type(entry).__name__}, not a table"
    params = entry.get("params")
    if not isinstance(params, Mapping) or not all(k in param_names and is_number(v) for k, v in params.items()):
        return "its params are not numbers for this store's parameters"
    seeds, nrmse = entry.get("noise_seeds"), entry.get("nrmse")
    if not isinstance(seeds, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds):
        return "its noise_seeds are not a list of integers"
    if not isinstance(nrmse, list) or not all(v is None or (is_number(v) and v >= 0) for v in nrmse):
        return "its nrmse are not a list of non-negative numbers (or null for a failed run)"
    if len(nrmse) != len(seeds):
        return f"it has {len(nrmse)} NRMSE values for {len(seeds)} noise seeds"
    scale = entry.get("chem_snr_scale", 1.0)
    if not is_number(scale) or scale <= 0:
        return "its chem_snr_scale is not a positive number"
    failed = entry.get("failed", [])
    if not isinstance(failed, list) or not all(isinstance(v, str) for v in failed):
        return "its failed list is not a list of messages"
    return ""
