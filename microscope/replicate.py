"""``tomosweep replicate``: a cell's best weights rerun under fresh noise, each rerun kept as it finishes.

An optimised NRMSE is the best of many trials on one noise realisation, so it is biased
low; :func:`replicate_cells` reruns the best weights under ``seeds`` new realisations and
stores each cell's NRMSE per seed in the store's ``attrs["replicates"]``, which
:func:`tomosweep.microscope.plan.plan` reads.

Each finished replicate is committed at once (the cell's entry grows by one seed): an
interrupted run (Ctrl-C, SIGTERM, a full disk) keeps everything that finished, and the
same command run again computes only the replicates still missing — those whose weights
and noise seed are already stored are skipped.

Every entry records the weights it ran (``params``). After ``resume --extend`` a cell's
best weights may change; replicates of the old weights then no longer describe the cell,
and plan says they are stale instead of showing them beside the new weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from tomosweep.errors import InputError, StoreError
from tomosweep.microscope.plan import replicate_key
from tomosweep.results import SweepStore
from tomosweep.sweep.api import connect_study, with_cluster
from tomosweep.sweep.spec import stored_study
from tomosweep.sweep.trial import TrialTask, noise_seed, run_trial

log = logging.getLogger(__name__)

#: cluster backends that run on this machine only; any other stored backend is confirmed first
LOCAL_BACKENDS = ("local", "local-cuda")


def stored_cluster_needs_consent(cluster: dict[str, Any] | None) -> str | None:
    """A description of a stored ``[cluster]`` that reaches beyond this machine, or None.

    A received store's ``[cluster]`` may name a scheduler address (the driver would send it
    the study and run whatever it returns) or a batch backend with a prologue (the store's
    shell lines run under the user's account): neither is used without consent.
    """
    settings = {k: v for k, v in dict(cluster or {}).items() if v not in (None, [], {}, "")}
    backend = str(settings.get("backend", "local"))
    if backend in LOCAL_BACKENDS:
        return None
    return ", ".join(f"{k}={v!r}" for k, v in settings.items())


def continue_command(
    store: Any,
    *,
    method: str,
    cells: Sequence[tuple[int, int]] | None,
    seeds: int,
    chem_snr_scales: Sequence[float] | None,
    cluster: str | None = None,
) -> str:
    """The ``tomosweep replicate`` invocation that finishes an interrupted one."""
    words = ["tomosweep", "replicate", str(store), "--method", method, "--seeds", str(seeds)]
    for h, c in cells or ():
        words += ["--cell", f"{h},{c}"]
    if chem_snr_scales:
        words += ["--chem-snr-scale", ",".join(f"{s:g}" for s in chem_snr_scales)]
    if cluster:
        words += ["--cluster", cluster]
    return shlex.join(words)


def _done_before(entry: Any, params: dict[str, float], seeds: dict[int, int]) -> dict[int, Any]:
    """The replicates of a stored entry that ran these weights with these noise seeds (index → NRMSE)."""
    if not isinstance(entry, dict) or not _same_weights(entry.get("params"), params):
        return {}
    indices, noise, values = entry.get("replicate"), entry.get("noise_seeds"), entry.get("nrmse")
    if not (isinstance(indices, list) and isinstance(noise, list) and isinstance(values, list)):
        return {}
    if not len(indices) == len(noise) == len(values):
        return {}
    out = {}
    for k, seed, value in zip(indices, noise, values, strict=True):
        if isinstance(k, int) and seeds.get(k) == seed and (value is None or isinstance(value, int | float)):
            out[k] = value
    return out


def _same_weights(a: Any, b: dict[str, float]) -> bool:
    if not isinstance(a, dict) or set(a) != set(b):
        return False
    try:
        return all(math.isclose(float(a[k]), float(b[k]), rel_tol=1e-9, abs_tol=0.0) for k in b)
    except (TypeError, ValueError):
        return False


def replicate_cells(
    store_path: str | os.PathLike[str],
    *,
    method: str = "fused",
    cells: list[tuple[int, int]] | None = None,
    seeds: int = 4,
    chem_snr_scales: list[float] | None = None,
    cluster: str | None = None,
    client: Any = None,
    on_result: Callable[[Any], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Rerun the best weights of ``cells`` (default: every finished cell) under ``seeds`` fresh
    noise realisations and store each cell's NRMSE per seed (``attrs["replicates"]``).

    ``chem_snr_scales`` adds the dose axis (Schwartz 2024 Supp. Fig. 21, NRMSE against
    chemical SNR): each factor multiplies every element's chemical SNR of the study, and
    the same seeds are rerun there (the weights stay those found at the study's SNR, so a
    lower dose is judged conservatively). 1 is the study's own SNR.

    Each replicate is committed as it finishes; replicates already stored for the same
    weights and noise seed are not run again (module docstring). ``on_plan(total, done)``
    is called once the work is known, before the cluster starts.
    """
    if seeds < 2:
        raise InputError(f"--seeds must be at least 2 to give a spread, got {seeds}")
    scales = [1.0] if not chem_snr_scales else [float(v) for v in chem_snr_scales]
    for scale in scales:
        if not (math.isfinite(scale) and 0 < scale <= 100):
            raise InputError(f"--chem-snr-scale factors must lie in (0, 100], got {scale:g}")
    with SweepStore.open(store_path, writable=True) as store:
        study = with_cluster(stored_study(store, to_run=True), cluster)
        finished = store.finished_cells(method)
        chosen = finished if cells is None else [tuple(c) for c in cells]
        for cell in chosen:
            if cell not in finished:
                raise StoreError(f"cell {cell[0]}×{cell[1]} has no finished {method} trial to replicate")
        stored = store.replicates()
        entries: dict[str, dict[str, Any]] = {}
        tasks: list[tuple[str, Any]] = []
        for scale in scales:
            study_json = json.dumps(_scaled_chem_snr(study, scale).to_json(), sort_keys=True)
            for h, c in chosen:
                found = store.best(method, (h, c))
                assert found is not None  # a finished cell has a best trial
                _, best = found
                params = {p: best[p] for p in study.searched(method) if p in best}
                key = replicate_key(method, h, c, scale)
                wanted = {k: noise_seed(study, h, c, k) for k in range(1, seeds + 1)}
                done = _done_before(stored.get(key), params, wanted)
                entries[key] = {"params": params, "chem_snr_scale": scale, "seeds": seeds, "results": {}}
                entries[key]["results"].update({k: (v, None) for k, v in done.items()})
                entries[key]["wanted"] = wanted
                tasks += [
                    (key, TrialTask(study_json, method, h, c, params, replicate=k))
                    for k in range(1, seeds + 1)
                    if k not in done
                ]
                if done:
                    log.info("%s: %d of %d replicates already stored", key, len(done), seeds)
                    store.record_replicates(key, _entry(entries[key]))  # drops any stale extra seeds
        total = sum(len(e["wanted"]) for e in entries.values())
        if on_plan is not None:
            on_plan(total, total - len(tasks))
        if tasks:
            with connect_study(study, client) as conn:
                from distributed import as_completed  # deferred: distributed takes seconds to import

                futures = {conn.client.submit(run_trial, t, pure=False): (key, t) for key, t in tasks}
                for future in as_completed(futures):
                    key, task = futures[future]
                    record = future.result()
                    entries[key]["results"][task.replicate] = (record.nrmse if record.ok else None, record.error)
                    store.record_replicates(key, _entry(entries[key]))  # the commit point of this replicate
                    if on_result is not None:
                        on_result(record)
        return {key: _entry(e) for key, e in entries.items()}


def _entry(state: dict[str, Any]) -> dict[str, Any]:
    """A cell's stored replicates: the weights run, and per finished seed its noise seed and NRMSE."""
    order = sorted(state["results"])
    return {
        "params": dict(state["params"]),
        "chem_snr_scale": state["chem_snr_scale"],
        "replicate": order,
        "noise_seeds": [state["wanted"][k] for k in order],
        "nrmse": [state["results"][k][0] for k in order],
        "failed": [str(state["results"][k][1] or "failed") for k in order if state["results"][k][0] is None],
        "complete": len(order) >= state["seeds"],
    }


def _scaled_chem_snr(study: Any, scale: float) -> Any:
    """The study with every element's chemical SNR multiplied by ``scale``."""
    if scale == 1.0:
        return study
    snr = study.acquisition.chem_snr
    scaled = {k: v * scale for k, v in snr.items()} if isinstance(snr, dict) else snr * scale
    return study.model_copy(update={"acquisition": study.acquisition.model_copy(update={"chem_snr": scaled})})
