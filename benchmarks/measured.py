"""The whole way back from the microscope, measured: simulated *measured* series through ``reconstruct-data``.

Per specimen (built-in phantoms at 48³, 45 HAADF tilts over ±70° and a chemical map at
every 5th, Schwartz 2024 Fig. 4 style), a series tomosweep never made:

* the built-in specimen made on a 2× finer grid and blurred by a probe-like Gaussian,
  projected there by ASTRA's ``linear`` (Joseph) kernel, not tomosweep's projector;
* every projection moved by a random drift (uniform ±``drift`` px, both axes, less the net
  translation of the specimen it holds, which no alignment can see: :func:`true_shifts`) plus the
  tilt axis ``axis_offset`` px off the detector centre, by a Fourier shift on the fine
  grid, then binned 2×2 to the reconstruction's pitch (the truth is the specimen's 2×2×2 mean);
* HAADF Poisson counts with a vacuum level of 0, chemical maps with a flat background
  of 15 % of each map's maximum, Poisson counts (tomosweep's SNR convention);
* written as a microscope leaves it (MRC with the angles in its header, TIFF maps with a
  ``.rawtlt``) with a data file naming no backgrounds, no scale and no k-factors.

Rows, all with the same weights (the fused defaults, a study's typical best):

* ``study``: the NRMSE those weights give on the series tomosweep itself simulates for the
  cell (what a study predicts);
* ``ideal``: the ASTRA series without drift, true backgrounds, true HAADF scale and
  k-factors, reconstructed directly (perfectly aligned and calibrated);
* ``reconstruct-data/<align>``: the drifting series through :func:`reconstruct_data` with
  every alignment, and with the true k-factors given; the shifts it reports against the
  true ones (modulo a translation of the specimen, the one freedom of any alignment), the
  centre of mass of the reconstruction against the truth's, and the fitted calibration.

* with ``--dose-drift F``, ``reconstruct-data/dose_drift/<mode>``: the specimen's series with a stage
  drift that keeps it inside the field of view (:data:`INSIDE`), projmatch-aligned: ``none`` without a
  dose drift; ``auto`` with each tilt's dose (HAADF and the chemical maps at that tilt) scaled by a
  uniform random factor in ``1 ± F`` and measured and divided out (``[haadf] dose = "auto"``);
  ``constant`` the same series with the correction off. ``dose_drift_ratio`` is each NRMSE over
  ``none``'s, ``dose_error_max`` the largest error of the measured relative dose.
  Target (issue 32): ``auto`` within 5 % of ``none``.
* with ``--factors``, ``reconstruct-data/factors/<set>``: the drifting series with one calibration
  at a time given its truth (k-factors, HAADF scale with them, chemical backgrounds, vacuum level,
  or an undrifted series with no alignment), and all but one of them (:func:`factor_sets`):
  where a gap to ``ideal`` comes from.

Target (issue 21): ``reconstruct-data`` ≤ 1.25 × ``ideal``; shifts within 0.3 px.

    nice -n 10 python benchmarks/measured.py [--out benchmarks/results/measured.json] [--quick]
        [--specimens …] [--n 48] [--alignments projmatch …] [--factors] [--dose-drift 0.1]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, parser, write  # noqa: E402

ALIGNMENTS = ("projmatch", "xcorr", "com")
# the --dose-drift rows' stage drift and axis offset (px): small enough that the blurred specimen stays inside
# the field of view at every tilt; with the default ±3 px it crosses the detector edge at some tilts, and
# the dose correction rightly turns itself off (its totals no longer measure the dose)
INSIDE = {"drift": 1.0, "axis_offset": 0.5}


def astra_forward(volume: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Project ``(n_y, n_z, n_x)`` slice by slice with ASTRA's CPU ``linear`` kernel → ``(n_angles, n_y, n_x)``."""
    import astra

    n = volume.shape[0]
    geom = astra.create_proj_geom("parallel", 1.0, n, np.deg2rad(angles))
    pid = astra.create_projector("linear", geom, astra.create_vol_geom(n, n))
    out = np.empty((angles.size, n, volume.shape[2]))
    try:
        for k in range(volume.shape[2]):
            # ASTRA's image axes are (z, y) for tomosweep's (y, z) slice (tests/solvers/test_projector.py)
            sid, sino = astra.create_sino(np.ascontiguousarray(volume[:, :, k].T, dtype=np.float32), pid)
            astra.data2d.delete(sid)
            out[:, :, k] = sino
    finally:
        astra.projector.delete(pid)
    return out


def fine_and_truth(name: str, n: int, sigma: float = 2.0) -> tuple[Any, Any]:
    """The specimen on a 2× finer grid blurred by a probe-like Gaussian (σ fine voxels), and the truth:
    its 2×2×2 block mean on the reconstruction grid. The measured series is projected and shifted
    on the fine grid and binned 2×2 on the detector, as a microscope samples a continuous object;
    a Fourier shift of a projection sampled at the reconstruction's own pitch would ring across the
    detector (its edges hold energy at the Nyquist frequency)."""
    from dataclasses import replace

    from scipy.ndimage import gaussian_filter

    from tomosweep.phantoms import make_specimen

    fine = make_specimen(name, 2 * n)
    fine = replace(fine, volumes=np.stack([gaussian_filter(v, sigma) for v in fine.volumes]))
    coarse = fine.volumes.reshape(fine.n_elements, n, 2, n, 2, n, 2).mean(axis=(2, 4, 6))
    return fine, replace(fine, volumes=coarse)


def _bin2(stack: np.ndarray) -> np.ndarray:
    """Sum 2×2 detector pixels of ``(n_angles, 2n, 2n)``, halved: line integrals in coarse voxels."""
    a, r, c = stack.shape
    return stack.reshape(a, r // 2, 2, c // 2, 2).sum(axis=(2, 4)) / 2.0 / 2.0


def true_shifts(angles: np.ndarray, *, drift: float, axis_offset: float, rng: np.random.Generator) -> np.ndarray:
    """``(n, 2)`` shifts (det, x): uniform drift in ±``drift`` and the axis offset across.

    The drift holds no net translation of the specimen (its ``y cos θ − z sin θ`` part across
    the axis and its mean along it are removed): no alignment can see such a translation
    (``tomosweep.series.align``, "No net translation"), so every alignment leaves the specimen
    where the raw series has it on average, and a random drift would move it by up to a voxel
    from the truth (at 32³, 0.9 voxels cost conio_composite 0.30 → 0.43 NRMSE with every
    calibration true). The rest of the drift is what alignment has to undo.
    """
    from tomosweep.series.align import without_translation

    shifts, _ = without_translation(angles, rng.uniform(-drift, drift, size=(angles.size, 2)))
    shifts[:, 0] += axis_offset
    return shifts


def measured_series(
    fine: Any,
    *,
    n_haadf: int = 45,
    chem_every: int = 5,
    drift: float = 3.0,
    axis_offset: float = 1.5,
    haadf_snr: float = 2000.0,
    chem_snr: float = 2.5,
    background: float = 0.15,
    gamma: float = 1.7,
    seed: int = 0,
    dose_drift: float = 0.0,
) -> dict[str, Any]:
    """A simulated measured series (module docstring) and everything true about it."""
    from tomosweep.series import apply_shifts

    rng = np.random.default_rng(seed)
    angles = np.linspace(-70, 70, n_haadf)
    chem_idx = np.arange(0, n_haadf, chem_every)
    shifts = true_shifts(angles, drift=drift, axis_offset=axis_offset, rng=rng)
    # drawn only when asked for, so the drift-free series stays the one earlier runs measured
    tilt_dose = 1.0 + rng.uniform(-dose_drift, dose_drift, n_haadf) if dose_drift > 0 else np.ones(n_haadf)
    z = np.asarray(fine.z, dtype=float)[:, None, None, None]
    fine_h = astra_forward(((z * fine.volumes) ** gamma).sum(axis=0), angles)
    clean_h = _bin2(fine_h)
    dose_h = haadf_snr**2 / clean_h.mean()
    series = {
        "angles": angles,
        "chem_angles": angles[chem_idx],
        "shifts": shifts,
        "chem_shifts": shifts[chem_idx],
        "haadf_scale": dose_h,
        "elements": tuple(fine.elements),
        "tilt_dose": tilt_dose,
    }
    moved = _bin2(apply_shifts(fine_h, -2 * shifts))  # raw_i(p) = aligned_i(p − s_i), on the fine grid
    series["haadf"] = rng.poisson(dose_h * moved * tilt_dose[:, None, None]).astype(np.float64)
    series["haadf_ideal"] = rng.poisson(dose_h * clean_h).astype(np.float64)
    chem, chem_ideal, doses, levels = [], [], [], []
    for i in range(fine.n_elements):
        fine_c = astra_forward(fine.volumes[i], angles[chem_idx])
        clean = _bin2(fine_c)
        level = background * clean.max()
        dose = chem_snr**2 / (clean + level).mean()
        moved_c = _bin2(apply_shifts(fine_c, -2 * shifts[chem_idx]))
        chem.append(rng.poisson(dose * (moved_c + level) * tilt_dose[chem_idx, None, None]).astype(np.float64))
        chem_ideal.append(rng.poisson(dose * (clean + level)).astype(np.float64))
        doses.append(dose)
        levels.append(dose * level)
    series.update(chem=np.stack(chem), chem_ideal=np.stack(chem_ideal), k=np.array(doses), chem_background=levels)
    return series


# The calibrations a data file can give instead of "auto" (or, for "aligned", the series
# without drift, with no alignment): what ``--factors`` replaces by its truth one at a time
TRUTHS = ("k", "scale", "chem_background", "vacuum", "aligned")


def write_data(
    folder: Path, series: dict[str, Any], *, align: str, truths: frozenset[str] = frozenset(), dose: str = "auto"
) -> Path:
    """MRC (angles in the header) + TIFF maps + ``.rawtlt`` + a data file with every calibration on "auto"
    except those named in ``truths`` (:data:`TRUTHS`), which it gives their true values."""
    import tifffile

    from tomosweep.series import write_mrc, write_rawtlt

    unknown = set(truths) - set(TRUTHS)
    if unknown:
        raise ValueError(f"unknown truths {sorted(unknown)}; choose from {TRUTHS}")
    drifted = "aligned" not in truths
    haadf, chem = (series["haadf"], series["chem"]) if drifted else (series["haadf_ideal"], series["chem_ideal"])
    folder.mkdir(parents=True, exist_ok=True)
    write_mrc(folder / "haadf.mrc", haadf.astype(np.float32), series["angles"])
    for e, stack in zip(series["elements"], chem, strict=True):
        tifffile.imwrite(folder / f"{e}.tif", stack.astype(np.float32), photometric="minisblack")
    write_rawtlt(folder / "maps.rawtlt", series["chem_angles"])
    maps = "\n".join(f'{e} = "{e}.tif"' for e in series["elements"])

    def table(values: Any) -> str:
        return "{ " + ", ".join(f"{e} = {float(v)!r}" for e, v in zip(series["elements"], values, strict=True)) + " }"

    haadf_lines = f'file = "haadf.mrc"\ndose = "{dose}"\n'
    if "vacuum" in truths:
        haadf_lines += "background = 0.0\n"  # the series is written with a vacuum level of 0
    if "scale" in truths:
        # counts per unit of Σ (Z x)^γ with x in concentration units: only meaningful with the k-factors
        haadf_lines += f"scale = {float(series['haadf_scale'])!r}\n"
    chem_lines = 'angles = "maps.rawtlt"\n'
    if "k" in truths:
        chem_lines += f"sensitivity = {table(series['k'])}\n"
    if "chem_background" in truths:
        chem_lines += f"background = {table(series['chem_background'])}\n"
    path = folder / "data.toml"
    path.write_text(
        f"gamma = 1.7\n[haadf]\n{haadf_lines}[chem]\n{chem_lines}"
        f'[chem.elements]\n{maps}\n[align]\nmethod = "{align if drifted else "none"}"\n[weights]\nmethod = "fused"\n'
    )
    return path


def modulo_translation(angles: np.ndarray, error: np.ndarray) -> np.ndarray:
    """``error`` (n, 2) less a translation of the specimen (``y cos θ − z sin θ`` across, a constant along)."""
    t = np.radians(angles)
    design = np.stack([np.cos(t), -np.sin(t)], axis=1)
    coef, *_ = np.linalg.lstsq(design, error[:, 0], rcond=None)
    return np.stack([error[:, 0] - design @ coef, error[:, 1] - error[:, 1].mean()], axis=1)


def mass_centre(volumes: np.ndarray, z: tuple[float, ...], gamma: float = 1.7) -> np.ndarray:
    """Centre of the HAADF signal Σ (Z x)^γ, voxels from the volume centre, ``(y, z, x)``."""
    m = np.einsum("e...,e->...", np.maximum(volumes, 0) ** gamma, np.asarray(z, dtype=float) ** gamma)
    out = []
    for axis in range(3):
        profile = m.sum(axis=tuple(a for a in range(3) if a != axis))
        out.append(profile @ (np.arange(m.shape[axis]) - (m.shape[axis] - 1) / 2) / profile.sum())
    return np.array(out)


def _nrmse(volumes: np.ndarray, truth: np.ndarray) -> float:
    from tomosweep.solvers import nrmse

    return float(nrmse(volumes, truth, channel_axis=0).mean())


def study_prediction(specimen: Any, params: dict[str, float], *, n_haadf: int, chem_every: int, seed: int) -> float:
    """The NRMSE of ``params`` on the series tomosweep simulates for the cell (its own projector, no drift)."""
    from tomosweep.phantoms import TiltScheme, simulate
    from tomosweep.sweep.methods import METHODS, CellData

    acq = simulate(specimen, TiltScheme(n_haadf, chem_every=chem_every), rng=seed)
    haadf_op, chem_op = acq.projectors(specimen.n)
    dose = np.array([acq.dose[e] for e in specimen.elements])
    cell = CellData(
        elements=tuple(specimen.elements),
        truth=specimen.volumes,
        haadf_projector=haadf_op,
        chem_projector=chem_op,
        haadf=acq.haadf / acq.dose["haadf"],
        chem=acq.chem / dose[:, None, None, None],
        eps=np.array([acq.background[e] for e in specimen.elements]) / dose,
        gamma=1.7,
        z=tuple(float(v) for v in specimen.z),
    )
    return _nrmse(np.asarray(METHODS["fused"].run(cell, params, "cpu").volume), specimen.volumes)


def ideal(specimen: Any, series: dict[str, Any], params: dict[str, float]) -> float:
    """Perfectly aligned (no drift) and calibrated (true backgrounds, HAADF scale, k-factors)."""
    from tomosweep.solvers import Projector
    from tomosweep.sweep.methods import METHODS, CellData

    k = series["k"]
    cell = CellData(
        elements=series["elements"],
        truth=specimen.volumes,
        haadf_projector=Projector(specimen.n, series["angles"]),
        chem_projector=Projector(specimen.n, series["chem_angles"]),
        haadf=series["haadf_ideal"] / series["haadf_scale"],
        chem=series["chem_ideal"] / k[:, None, None, None],
        eps=np.asarray(series["chem_background"]) / k,
        gamma=1.7,
        z=tuple(float(v) for v in specimen.z),
    )
    return _nrmse(np.asarray(METHODS["fused"].run(cell, params, "cpu").volume), specimen.volumes)


def through_reconstruct_data(
    specimen: Any,
    series: dict[str, Any],
    folder: Path,
    *,
    align: str,
    truths: frozenset[str] = frozenset(),
    dose: str = "auto",
) -> dict[str, Any]:
    """``reconstruct-data`` on the written series; its NRMSE, shift errors, centre of mass, calibration."""
    import json

    from tomosweep.microscope.reconstruct import reconstruct_data

    data = write_data(folder / "data", series, align=align, truths=truths, dose=dose)
    t0 = time.perf_counter()
    done = reconstruct_data(data, folder / "out", holdout=None)
    seconds = time.perf_counter() - t0
    volumes = np.load(folder / "out" / "volumes.npz")["volumes"].astype(np.float64)
    record = json.loads((folder / "out" / "reconstruction.json").read_text())
    from tomosweep.solvers import nrmse

    per_element = nrmse(volumes, specimen.volumes, channel_axis=0)
    row: dict[str, Any] = {
        "nrmse": float(np.mean(per_element)),
        "nrmse_per_element": dict(zip(specimen.elements, np.round(per_element, 4).tolist(), strict=True)),
        "centre_of_mass_error_voxels": (
            mass_centre(volumes, specimen.z) - mass_centre(specimen.volumes, specimen.z)
        ).tolist(),
        "seconds": round(seconds, 1),
        "haadf_scale_fitted": record.get("haadf_scale"),
        "haadf_scale_start": record.get("solver", {}).get("haadf_scale_start"),
        "haadf_scale_true": None,
        "haadf_scale_ratio": None,
        # the series is written with a vacuum level of 0 counts
        "haadf_background": record.get("haadf_background"),
        "haadf_background_true": 0.0,
        "chem_background": record.get("chem_background_counts"),
        "chem_background_true": [round(float(v), 4) for v in series["chem_background"]],
        "notes": done.notes,
    }
    if record.get("dose") and record["dose"]["applied"]:
        truth = series["tilt_dose"] / np.median(series["tilt_dose"])
        row["dose_error_max"] = round(float(np.abs(np.asarray(record["dose"]["haadf_dose"]) / truth - 1).max()), 4)
        row["dose_columns_used"] = f"{record['dose']['columns_used']} of {record['dose']['columns']}"
    if "k" in truths:
        # with k-factors the volume is in concentration units: the true scale is the HAADF dose.
        # Without them each element's map is in its own counts, and no single true scale exists.
        row["haadf_scale_true"] = float(series["haadf_scale"])
        row["haadf_scale_ratio"] = round(float(record["haadf_scale"]) / float(series["haadf_scale"]), 3)
    if done.alignment is not None:
        found = np.stack([done.alignment["shift_det_px"], done.alignment["shift_x_px"]], axis=1)
        error = found - series["shifts"]
        residual = modulo_translation(series["angles"], error)
        row.update(
            shift_error_max_px=np.abs(residual).max(axis=0).round(3).tolist(),
            shift_error_rms_px=np.sqrt((residual**2).mean(axis=0)).round(3).tolist(),
            shift_error_abs_max_px=np.abs(error).max(axis=0).round(3).tolist(),
            reported_largest_shift_px=float(np.abs(found).max()),
            true_largest_shift_px=float(np.abs(series["shifts"]).max()),
            reported_axis_offset_px=done.alignment["tilt_axis_offset_px"],
        )
    return row


def factor_sets() -> dict[str, frozenset[str]]:
    """``--factors``: each calibration given its truth alone, and all but one of them.

    The scale is counts per unit of Σ (Z x)^γ with x in concentration units, so it is only
    true together with the k-factors; it is added and left out with them.
    """
    sets = {f"+{t}": frozenset({t}) for t in TRUTHS if t != "scale"}
    sets["+k+scale"] = frozenset({"k", "scale"})
    every = frozenset(TRUTHS)
    sets["all"] = every
    for t in TRUTHS:
        if t != "scale":
            sets[f"all-{t}"] = every - ({t, "scale"} if t == "k" else {t})
    sets["all-scale"] = every - {"scale"}
    return sets


def run(
    names: list[str],
    n: int,
    *,
    seed: int,
    quick: bool,
    alignments: tuple[str, ...] = ALIGNMENTS,
    factors: bool = False,
    dose_drift: float = 0.0,
) -> dict[str, Any]:
    from tomosweep.sweep.methods import METHODS

    params = {p.name: float(p.default) for p in METHODS["fused"].params}
    n_haadf, chem_every = (15, 5) if quick else (45, 5)
    if quick:
        params["n_iter"] = 30
    report: dict[str, Any] = {"weights": params, "n": n, "n_haadf": n_haadf, "chem_every": chem_every, "specimens": {}}
    for name in names:
        fine, specimen = fine_and_truth(name, n)
        series = measured_series(fine, n_haadf=n_haadf, chem_every=chem_every, seed=seed)
        rows: dict[str, Any] = {
            "true_shifts_max_px": np.abs(series["shifts"]).max(axis=0).round(3).tolist(),
            "true_haadf_scale": float(series["haadf_scale"]),
            "study": study_prediction(specimen, params, n_haadf=n_haadf, chem_every=chem_every, seed=seed),
            "ideal": ideal(specimen, series, params),
        }
        with tempfile.TemporaryDirectory() as tmp:
            for align in alignments[:1] if quick else alignments:
                rows[f"reconstruct-data/{align}"] = through_reconstruct_data(
                    specimen, series, Path(tmp) / align, align=align
                )
            # k-factors must not make things worse: measured in --quick too
            rows["reconstruct-data/projmatch+k"] = through_reconstruct_data(
                specimen, series, Path(tmp) / "k", align="projmatch", truths=frozenset({"k"})
            )
            if dose_drift > 0:
                steady = measured_series(fine, n_haadf=n_haadf, chem_every=chem_every, seed=seed, **INSIDE)
                drifting = measured_series(
                    fine, n_haadf=n_haadf, chem_every=chem_every, seed=seed, dose_drift=dose_drift, **INSIDE
                )
                for key, series_, mode in (
                    ("dose_drift/none", steady, "auto"),
                    ("dose_drift/auto", drifting, "auto"),
                    ("dose_drift/constant", drifting, "constant"),
                ):
                    rows[f"reconstruct-data/{key}"] = through_reconstruct_data(
                        specimen, series_, Path(tmp) / key.replace("/", "_"), align="projmatch", dose=mode
                    )
                base = rows["reconstruct-data/dose_drift/none"]["nrmse"]
                rows["dose_drift_ratio"] = {
                    key: round(rows[f"reconstruct-data/dose_drift/{key}"]["nrmse"] / base, 4)
                    for key in ("auto", "constant")
                }
            if factors:
                # one calibration at a time replaced by its truth (and all but one), projmatch where
                # the series drifts: which factor the gap to "ideal" comes from
                for label, truths in factor_sets().items():
                    key = f"reconstruct-data/factors/{label}"
                    rows[key] = through_reconstruct_data(
                        specimen, series, Path(tmp) / label, align="projmatch", truths=truths
                    )
                    print(name, key, round(rows[key]["nrmse"], 4), rows[key]["nrmse_per_element"], flush=True)
        rows["ratio_to_ideal"] = {
            key: round(value["nrmse"] / rows["ideal"], 3)
            for key, value in rows.items()
            if key.startswith("reconstruct-data/")
        }
        report["specimens"][name] = rows
        print(name, {k: v if not isinstance(v, dict) else v.get("nrmse", v) for k, v in rows.items()}, flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0], "measured.json")
    p.add_argument("--specimens", nargs="+", default=["core_shell_cube", "conio_composite", "nanocubes"])
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke test: one specimen at 24³, 15 tilts")
    p.add_argument("--alignments", nargs="+", default=list(ALIGNMENTS), choices=ALIGNMENTS)
    p.add_argument(
        "--factors",
        action="store_true",
        help="add rows with one calibration at a time given its truth (k-factors, HAADF scale, chemical "
        "backgrounds, vacuum level, an undrifted series), and all but one",
    )
    p.add_argument(
        "--dose-drift",
        type=float,
        default=0.0,
        help="add rows where each tilt's dose is scaled by a uniform random factor in 1 ± this (e.g. 0.1)",
    )
    args = p.parse_args(argv)
    names = args.specimens[:1] if args.quick else args.specimens
    n = min(args.n, 24) if args.quick else args.n
    t0 = time.perf_counter()
    report = run(
        names,
        n,
        seed=args.seed,
        quick=args.quick,
        alignments=tuple(args.alignments),
        factors=args.factors,
        dose_drift=args.dose_drift,
    )
    report.update(machine=machine(), wall_time_s=round(time.perf_counter() - t0, 1), quick=args.quick)
    write(args.out, report)


if __name__ == "__main__":
    main()
