"""How to acquire: the cheapest cells of a study's grid that reach a target ⟨NRMSE⟩.

A cell's value is its best NRMSE; where ``tomosweep replicate`` has rerun the cell's best
weights under new noise seeds, it is the mean of those reruns plus one standard
deviation (an optimised value is biased low: it was picked as the best of many on one
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

from tomosweep.errors import InputError
from tomosweep.results.store import SweepStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanRow:
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
    if chem_snr_scale != 1.0 and not any(k.endswith(f"/snr×{chem_snr_scale:g}") for k in store.replicates()):
        raise InputError(
            f"no replicates at {chem_snr_scale:g}× the study's chemical SNR; run "
            f"tomosweep replicate {store.path} --chem-snr-scale {chem_snr_scale:g}"
        )
    dose = chem_snr_scale**2
    maps = store.maps(method)
    replicates = store.replicates()
    rows = []
    for i, h in enumerate(store.n_haadf):
        for j, c in enumerate(store.n_chem):
            best = float(maps["best_nrmse"][i, j])
            if not math.isfinite(best):
                continue
            weights = {
                name: float(maps["best_params"][i, j, k])
                for k, name in enumerate(store.param_names)
                if math.isfinite(float(maps["best_params"][i, j, k]))
            }
            rep = replicates.get(replicate_key(method, h, c, chem_snr_scale))
            if chem_snr_scale != 1.0 and not rep:
                continue
            mean = spread = None
            n_rep = 0
            value = best
            if rep and rep.get("nrmse"):
                values = np.asarray(rep["nrmse"], dtype=float)
                values = values[np.isfinite(values)]
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
    for key, entry in store.replicates().items():
        parts = key.split("/")
        if parts[0] != method:
            continue
        values = np.asarray([v for v in entry["nrmse"] if v is not None], dtype=float)
        if values.size < 2:
            continue
        scale = float(entry.get("chem_snr_scale", 1.0))
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
