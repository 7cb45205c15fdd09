"""How to acquire: the cheapest cells of a study's grid that reach a target ⟨NRMSE⟩.

A cell's value is its best NRMSE; where ``tomosweep replicate`` has rerun the cell's best
weights under new noise seeds, it is the mean of those reruns plus one standard
deviation. Replicates count only when the weights they ran are the cell's best weights
now: after ``resume --extend`` found better ones, they are reported as stale, never shown
beside weights they did not run (an optimised value is biased low: it was picked as the best of many on one
noise realisation). Cells are ordered by cost — by default fewest chemical tilts first
(chemical maps cost the dose and the time), then fewest HAADF tilts; or by a linear cost
``chem=10,haadf=1`` — and every cell that meets the target is listed with its weights.

The frontier figure draws, per HAADF count, the value against chemical tilts, with the
target as a line and each line's error bars from the replicates.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tomosweep.errors import InputError, TomosweepError
from tomosweep.results.store import SweepStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanRow:
    """One cell of an acquisition plan: its value, its cost and whether it meets the target.

    Attributes
    ----------
    n_haadf, n_chem : int
        The cell's HAADF and chemical tilts.
    best : float
        The study's best NRMSE of the cell.
    mean, spread : float or None
        The replicates' mean NRMSE and standard deviation (None when not replicated).
    n_replicates : int
        Replicates counted.
    value : float
        What is compared with the target: ``mean + spread``, or ``best``.
    cost : float
        The cell's cost, the order of the plan.
    meets : bool
        ``value`` ≤ the target.
    weights : dict of str to float
        The cell's best weights.
    replicates_unused : str
        Why stored replicates were not used ("" when used or absent).
    """

    n_haadf: int
    n_chem: int
    best: float  # the study's best NRMSE of the cell
    mean: float | None  # replicates' mean NRMSE (None when not replicated)
    spread: float | None  # replicates' standard deviation
    n_replicates: int
    value: float  # what is compared with the target: mean + spread, or best
    cost: float
    meets: bool
    weights: dict[str, float]
    # why the cell's stored replicates were not used ("" when used or absent): they ran other
    # weights than the cell's best (a study extended since), or the entry is malformed
    replicates_unused: str = ""


def parse_cost(text: str | None) -> dict[str, float] | None:
    """``"chem=10,haadf=1"`` → ``{"chem": 10, "haadf": 1}`` (None: fewest chemical tilts first)."""
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in ("chem", "haadf"):
            raise InputError(f'--cost: unknown term {key!r}; write e.g. "chem=10,haadf=1"')
        try:
            out[key] = float(value)
        except ValueError:
            raise InputError(f"--cost: {key}={value!r} is not a number") from None
        if not (math.isfinite(out[key]) and out[key] >= 0):
            raise InputError(f"--cost: {key} must be finite and ≥ 0")
    return {"chem": out.get("chem", 0.0), "haadf": out.get("haadf", 0.0)}


def replicate_key(method: str, n_haadf: int, n_chem: int, chem_snr_scale: float = 1.0) -> str:
    """``method/H/C`` at the study's chemical SNR, ``method/H/C/snr×F`` at F times it."""
    key = f"{method}/{n_haadf}/{n_chem}"
    return key if chem_snr_scale == 1.0 else f"{key}/snr×{chem_snr_scale:g}"


def stored_replicates(store: SweepStore) -> dict[str, Any]:
    """The store's replicate entries; a damaged ``replicates`` attribute reads as none (with a log line)."""
    try:
        entries = store.replicates()
    except (TypeError, ValueError):
        log.warning("%s: the replicates attribute is not a table; ignored", store.path)
        return {}
    return {str(k): v for k, v in entries.items()}


def replicate_values(entry: Any) -> np.ndarray | None:
    """The finite NRMSE values of a stored replicate entry, or None when the entry is malformed
    (attributes edited by hand or damaged: it is then ignored, never a traceback)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("nrmse"), list):
        return None
    raw = entry["nrmse"]
    if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in raw):
        return None
    values = np.asarray([v for v in raw if v is not None], dtype=float)
    values = values[np.isfinite(values)]
    return values if np.all(values >= 0) else None


def usable_replicates(entry: Any, weights: dict[str, float]) -> tuple[np.ndarray | None, str]:
    """The replicate values of ``entry`` when they ran ``weights`` (the cell's best now), and why not.

    Returns ``(values, "")`` when usable, ``(None, reason)`` when stale or malformed,
    ``(None, "")`` when the cell has no replicates.
    """
    if not entry:
        return None, ""
    values = replicate_values(entry)
    if values is None:
        return None, "malformed replicate entry (ignored)"
    ran = entry.get("params")
    if not isinstance(ran, dict) or not ran:
        return None, "replicates do not record their weights (rerun tomosweep replicate)"
    try:
        same = all(
            name in weights and math.isclose(float(value), weights[name], rel_tol=1e-9) for name, value in ran.items()
        )
    except (TypeError, ValueError):
        return None, "malformed replicate entry (ignored)"
    if not same:
        return None, "stale: the replicates ran earlier best weights (rerun tomosweep replicate)"
    return values, ""


def plan(
    store: SweepStore,
    target: float,
    *,
    method: str = "fused",
    cost: dict[str, float] | None = None,
    chem_snr_scale: float = 1.0,
) -> list[PlanRow]:
    """Every cell of ``method`` with a finished trial, cheapest first (module docstring).

    At a ``chem_snr_scale`` other than 1 only cells replicated at that chemical SNR
    (``tomosweep replicate --chem-snr-scale``) are listed, and a chemical tilt costs the
    dose: ``chem × scale²`` (Poisson: SNR grows as the square root of the dose).
    """
    if not (math.isfinite(target) and target > 0):
        raise InputError(f"--target must be a positive NRMSE, got {target}")
    if chem_snr_scale != 1.0 and not any(k.endswith(f"/snr×{chem_snr_scale:g}") for k in stored_replicates(store)):
        raise InputError(
            f"no replicates at {chem_snr_scale:g}× the study's chemical SNR; run "
            f"tomosweep replicate {store.path} --chem-snr-scale {chem_snr_scale:g}"
        )
    dose = chem_snr_scale**2
    cells = store.finished_cells(method)
    replicates = stored_replicates(store)
    rows = []
    for h, c in cells:
        found = store.best(method, (h, c))
        assert found is not None  # a finished cell has a best trial
        best, weights = found
        rep = replicates.get(replicate_key(method, h, c, chem_snr_scale))
        if chem_snr_scale != 1.0 and not rep:
            continue
        mean = spread = None
        n_rep = 0
        value = best
        values, unused = usable_replicates(rep, weights)
        if values is not None:
            if values.size:
                n_rep = int(values.size)
                mean = float(values.mean())
                spread = float(values.std(ddof=1)) if values.size > 1 else 0.0
                value = mean + spread
        key = (c * dose, h) if cost is None else (cost["chem"] * c * dose + cost["haadf"] * h, c, h)
        rows.append(
            PlanRow(
                n_haadf=int(h),
                n_chem=int(c),
                best=best,
                mean=mean,
                spread=spread,
                n_replicates=n_rep,
                value=value,
                cost=float(key[0]),
                meets=value <= target,
                weights=weights,
                replicates_unused=unused,
            )
        )
    if cost is None:
        rows.sort(key=lambda r: (r.n_chem, r.n_haadf))
    else:
        rows.sort(key=lambda r: (r.cost, r.n_chem, r.n_haadf))
    log.info(
        "%s: %d of %d cells reach ⟨NRMSE⟩ ≤ %g (%d replicated)",
        method,
        sum(r.meets for r in rows),
        len(rows),
        target,
        sum(r.n_replicates > 0 for r in rows),
    )
    return rows


def frontier_figure(store: SweepStore, rows: list[PlanRow], target: float, method: str) -> Any:
    """Value against chemical tilts, one line per HAADF count, the target drawn across."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for h in store.n_haadf:
        line = sorted((r for r in rows if r.n_haadf == h), key=lambda r: r.n_chem)
        if not line:
            continue
        x = [r.n_chem for r in line]
        y = [r.mean if r.mean is not None else r.best for r in line]
        err = [r.spread or 0.0 for r in line]
        ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, label=f"{h} HAADF tilts")
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xlabel("chemical tilts")
    ax.set_ylabel("⟨NRMSE⟩ (replicate mean ± 1 s.d., else best)")
    ax.set_title(f"{method}: what each acquisition reaches")
    ax.legend(fontsize=8)
    return fig


def snr_figure(store: SweepStore, method: str) -> Any | None:
    """NRMSE against chemical SNR for every replicated cell (Schwartz 2024 Supp. Fig. 21), or None
    when no cell was replicated at more than one SNR."""
    from matplotlib.figure import Figure

    study_snr = store.spec["acquisition"].get("chem_snr", 2.5)
    base = float(np.mean(list(study_snr.values()))) if isinstance(study_snr, dict) else float(study_snr)
    curves: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    for key, entry in stored_replicates(store).items():
        parts = key.split("/")
        if parts[0] != method:
            continue
        values = replicate_values(entry)
        if values is None or values.size < 2 or len(parts) < 3 or not _current(store, method, parts, entry):
            continue
        scale = entry.get("chem_snr_scale", 1.0)
        scale = float(scale) if isinstance(scale, int | float) and scale > 0 else 1.0
        curves.setdefault((int(parts[1]), int(parts[2])), []).append(
            (base * scale, float(values.mean()), float(values.std(ddof=1)))
        )
    curves = {k: sorted(v) for k, v in curves.items() if len(v) > 1}
    if not curves:
        return None
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for (h, c), points in sorted(curves.items()):
        x, y, e = zip(*points, strict=True)
        ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=3, label=f"{h} HAADF × {c} chemical")
    ax.set_xscale("log")
    ax.set_xlabel("chemical SNR (mean over elements)")
    ax.set_ylabel("⟨NRMSE⟩, replicate mean ± 1 s.d.")
    ax.set_title(f"{method}: accuracy against chemical dose")
    ax.legend(fontsize=8)
    return fig


def _current(store: SweepStore, method: str, parts: list[str], entry: Any) -> bool:
    """True when a replicate entry ran the best weights its cell has now."""
    try:
        found = store.best(method, (int(parts[1]), int(parts[2])))
    except (ValueError, TomosweepError):  # a key off the grid or not numbers: not this study's cell
        return False
    weights = found[1] if found is not None else {}
    values, _ = usable_replicates(entry, weights)
    return values is not None
