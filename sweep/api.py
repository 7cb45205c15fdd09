"""The Python API, one function per CLI command: run, resume, status, export, reconstruct."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.cluster import BACKENDS, JOBQUEUE, ClusterSettings, open_cluster, worker_environ
from tomosweep.cluster.connect import Connection
from tomosweep.errors import BackendError, ClusterError, InputError, SpecError, StoreError, TomosweepError
from tomosweep.phantoms import Specimen, load_specimen, make_specimen, save_specimen
from tomosweep.phantoms.files import check_output
from tomosweep.phantoms.specimens import declared_elements
from tomosweep.results import SweepStore, TrialRecord
from tomosweep.results.export import best_params_frame, check_export_folder, export, export_names
from tomosweep.results.store import check_store_location
from tomosweep.series.files import file_hash as series_file_hash
from tomosweep.solvers.backend import gpu_available, gpu_unavailable_reason, to_numpy
from tomosweep.sweep import memory
from tomosweep.sweep.check import refuse_damaged, refuse_damaged_ladder
from tomosweep.sweep.ladder import climb
from tomosweep.sweep.landscape import cell_surrogates
from tomosweep.sweep.methods import method_sources
from tomosweep.sweep.runner import Progress, Runner, RunSummary
from tomosweep.sweep.spec import Study, check_extension, load_study, stored_study
from tomosweep.sweep.trial import TrialTask, build_cell_data, reconstruct, run_trial, score
from tomosweep.sweep.tune import (
    HAADF_ONLY,
    Prepared,
    prepare,
    prepared_from,
    prepared_meta,
    run_tune_trial,
    series_digest,
    tune_elements,
    tune_objective,
    tune_study,
)

PathLike = str | os.PathLike[str]


log = logging.getLogger(__name__)


def _as_study(study: Study | PathLike) -> Study:
    return study if isinstance(study, Study) else load_study(study)


def _check_device(study: Study) -> None:
    if study.device == "gpu" and study.cluster.backend == "local" and not gpu_available():
        raise BackendError(
            f'the study asks for device = "gpu" but this machine has none ({gpu_unavailable_reason()}); '
            'set device = "cpu" (or "auto"), or install the GPU extra: pip install "tomosweep[gpu]"'
        )


def _elements(study: Study) -> tuple[str, ...]:
    """The specimen's elements; a ``chem_snr`` table must name exactly these (a tune: the data's)."""
    if study.is_tune:
        return tune_elements(study)
    phantom = study.specimen
    if phantom.file is not None:
        elements = tuple(load_specimen(phantom.file).elements)
    else:
        assert phantom.name is not None  # PhantomSpec holds a name or a file
        # at the study's own size: an option valid there (a radius in voxels, say) may not be at 16³
        elements = declared_elements(phantom.name, phantom.size, **phantom.options)
        if elements is None:  # a specimen without a declaration (a plugin's): build it to learn them
            elements = tuple(make_specimen(phantom.name, phantom.size, **phantom.options).elements)
    table = study.acquisition.chem_snr
    if isinstance(table, dict) and set(table) != set(elements):
        missing, unknown = sorted(set(elements) - set(table)), sorted(set(table) - set(elements))
        raise SpecError(
            "acquisition.chem_snr must name exactly the specimen's elements "
            f"({', '.join(elements)})"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; not in the specimen: {', '.join(unknown)}" if unknown else "")
        )
    return elements


def file_hash(path: PathLike) -> str:
    """SHA-256 of a file, or of a directory's files (names and contents, sorted): a zarr specimen."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def study_inputs(study: Study) -> dict[str, Any]:
    """What a study reads besides its own text, with content hashes (stored at creation)."""
    if study.phantom is None or study.phantom.file is None:
        return {}
    return {"phantom.file": {"path": str(study.phantom.file), "sha256": file_hash(study.phantom.file)}}


def tune_inputs(data: PathLike, sources: dict[str, str]) -> dict[str, Any]:
    """What a tune pins: its data file's series tables and every series file it names, each by SHA-256.

    The data file itself is pinned by what describes the series (:func:`series_digest`), not by
    its bytes: its ``[budget]`` may grow on ``resume --extend`` like a study file's."""
    pinned = {"data.file": {"path": str(Path(data).resolve()), "sha256": series_digest(data)}}
    for i, (path, digest) in enumerate(sorted(sources.items())):
        pinned[f"data.series.{i}"] = {"path": path, "sha256": digest}
    return pinned


def _check_inputs(store: SweepStore, study: Study) -> None:
    """Refuse to resume on inputs that changed since the store was created.

    A tune's inputs are its data files: one that changed is refused; one that is gone is
    not needed (the tune's aligned series is stored) and is only logged."""
    if study.is_tune:
        now = {}
        for name, then in store.inputs.items():
            path = Path(str(then.get("path", "")))
            if path.is_file():
                # the series files are pinned as load_series hashes them: their bytes
                digest = series_digest(path) if name == "data.file" else series_file_hash(path)
                now[name] = {"path": str(path), "sha256": digest}
            else:
                log.info("%s %s is gone; the tune goes on from the series stored in %s", name, path, store.path)
    else:
        now = study_inputs(study)
    for name, then in store.inputs.items():
        if name not in now:
            continue
        if now[name]["sha256"] != then.get("sha256"):
            raise SpecError(
                f"{name} {now[name]['path']} has changed since {store.path} was created "
                f"(sha256 then {then.get('sha256', '?')[:16]}…, now {now[name]['sha256'][:16]}…): "
                + (
                    "new trials would be scored on other data than the stored ones. Restore the file, or tune the "
                    "new data in a new store"
                    if study.is_tune
                    else "new trials would be scored against another ground truth. Restore the file, "
                    "or start a new study on the new one"
                )
            )


def with_cluster(study: Study, cluster: str | None) -> Study:
    """Apply a ``--cluster`` choice: a backend name, or a ``tcp://`` / ``tls://`` scheduler address.

    The same backend as the study's keeps the study's ``[cluster]`` settings; another
    backend starts from empty settings, so the rest comes from the Dask config
    (``jobqueue.<backend>.*`` for the batch schedulers).
    """
    if not cluster:
        return study
    current = study.cluster
    raw: dict[str, Any]
    if cluster.startswith(("tcp://", "tls://")):
        tls = {}
        if current.backend == "address":
            tls = {"tls_ca_file": current.tls_ca_file, "tls_cert": current.tls_cert, "tls_key": current.tls_key}
        raw = {"backend": "address", "address": cluster, **tls}
    elif cluster == current.backend:
        return study
    elif cluster in BACKENDS:
        raw = {"backend": cluster}
    else:
        raise ClusterError(
            f"--cluster {cluster!r}: not a backend ({', '.join(BACKENDS)}) nor a tcp:// or tls:// address"
        )
    try:
        settings = ClusterSettings(**raw)
    except ValueError as exc:
        raise ClusterError(f"--cluster {cluster}: {exc}") from None
    return study.model_copy(update={"cluster": settings})


@contextlib.contextmanager
def connect_study(study: Study, client: Any) -> Iterator[Connection]:
    """The given Dask ``client``, or a cluster opened from the study's ``[cluster]`` (closed on exit)."""
    if client is not None:
        yield Connection(client=client, backend="address", description="the given Dask client")
        return

    with open_cluster(study.cluster) as opened:
        yield opened


def _check_memory(study: Study, conn: Connection, elements: tuple[str, ...], *, n: int | None = None) -> None:
    """Refuse a study whose largest trial cannot fit on the workers (see :mod:`tomosweep.sweep.memory`).

    ``n``: the volume's edge where the study has no phantom to tell it (a tune's data)."""
    if n is not None:
        n_el = len(elements)
    elif study.specimen.file is not None:
        shape = load_specimen(study.specimen.file).volumes.shape
        n, n_el = int(shape[1]), int(shape[0])
    else:
        n, n_el = study.specimen.size, len(elements)
    gpu = study.device != "cpu" and bool(conn.resources and "GPU" in conn.resources)
    memory.check_fits(memory.largest_trials(study, n, n_el), memory.worker_budget(conn.client, gpu=gpu))


def _runner(study: Study, store: SweepStore, conn: Connection, **kwargs: Any) -> Runner:
    return Runner(study, store, conn.client, slots=conn.slots, resources=conn.resources, **kwargs)


def _climb(study: Study, store: SweepStore, conn: Connection, **kwargs: Any) -> list[TrialRecord]:
    """Run the study's resolution ladder (if any) on ``conn``; the top rung's trials."""
    if not study.budget.ladder:
        return []

    def run(rung: Study, opened: SweepStore, warm: list[TrialRecord]) -> RunSummary:
        return _runner(rung, opened, conn, warm_from=warm, **kwargs).run()

    def create(rung: Study, path: Path) -> SweepStore:
        return create_store(rung, path, elements=tuple(store.elements))

    def refuse(rung: SweepStore) -> None:
        refuse_damaged(rung, top=store.path)

    return climb(study, store.path, run, create=create, refuse=refuse)


def _earlier_trials(path: PathLike | None, study: Study) -> list[TrialRecord]:
    """The finished trials of an earlier study's store (``--warm-start``), checked to share a method."""
    if path is None:
        return []
    with SweepStore.open(path) as other:
        shared = sorted(set(other.methods) & set(study.methods))
        if not shared:
            raise StoreError(
                f"--warm-start {path} has methods {', '.join(other.methods)}, none of this study's "
                f"({', '.join(study.methods)}); its points cannot start any cell"
            )
        return [r for r in other.records() if r.ok and r.method in shared]


def create_store(
    study: Study,
    path: PathLike,
    *,
    elements: tuple[str, ...] | None = None,
    inputs: dict[str, Any] | None = None,
) -> SweepStore:
    """A new, locked, empty store for ``study``: its spec, grid, methods and input hashes."""
    return SweepStore.create(
        path,
        spec=study.to_json(),
        spec_hash=study.content_hash(),
        methods=list(study.methods),
        param_names=study.param_names,
        elements=elements if elements is not None else _elements(study),
        n_haadf=study.acquisition.n_haadf,
        n_chem=study.acquisition.n_chem,
        inputs=study_inputs(study) if inputs is None else inputs,
        method_sources=method_sources(study.methods),
    )


def run_study(
    study: Study | PathLike,
    store: PathLike,
    *,
    cluster: str | None = None,
    client: Any = None,
    progress: Progress | None = None,
    on_client: Callable[[Connection], None] | None = None,
    trial_fn: Callable[[TrialTask], TrialRecord] = run_trial,
    warm_start: PathLike | None = None,
) -> RunSummary:
    """Create ``store`` for ``study`` and run its whole budget.

    ``warm_start``: an earlier study's store whose best points start each cell (see
    :func:`~tomosweep.sweep.runner.warm_points`).

    ``cluster``: a backend name or scheduler address that replaces the study's
    ``[cluster]`` choice (see :func:`with_cluster`). ``client``: an existing
    ``distributed.Client`` (else one is opened from the study's ``[cluster]`` section
    and closed at the end). ``on_client`` is called with the :class:`Connection` once
    its first worker is up (the CLI prints the cluster and dashboard there). The store
    is created only then: a cluster that cannot start leaves nothing behind.
    """
    study = with_cluster(_as_study(study), cluster)
    _check_device(study)

    store = check_store_location(store)  # before the cluster starts
    elements = _elements(study)
    earlier = _earlier_trials(warm_start, study)
    with connect_study(study, client) as conn:
        _check_memory(study, conn, elements)  # before the store exists: a refused study leaves nothing behind
        if on_client:
            on_client(conn)
        with create_store(study, store, elements=elements) as opened:
            log.info("created %s for study %s (%s)", store, study.name, conn.description)
            earlier = _climb(study, opened, conn, progress=progress, trial_fn=trial_fn) + earlier
            return _runner(study, opened, conn, progress=progress, trial_fn=trial_fn, warm_from=earlier).run()


_PREPARED = "tune"  # the name a tune's aligned series is kept under (SweepStore.write_prepared)


def _keep_prepared(store: SweepStore, prepared: Prepared, report: dict[str, Any], notes: list[str]) -> None:
    arrays = {
        "haadf": prepared.haadf,
        "haadf_angles": prepared.haadf_angles,
        "chem": prepared.chem,
        "chem_angles": prepared.chem_angles,
        "chem_shifts": prepared.chem_shifts,
    }
    store.write_prepared(_PREPARED, arrays, {**prepared_meta(prepared), "alignment": report, "notes": notes})


def stored_prepared(store: SweepStore) -> Prepared | None:
    """A tune's aligned, calibrated series as its store keeps it (None if it was never written)."""
    found = store.read_prepared(_PREPARED)
    if found is None:
        return None
    arrays, meta = found
    try:
        return prepared_from(arrays, meta)
    except InputError as exc:
        raise StoreError(f"store {store.path} is damaged: {exc}. The trials are intact") from None


def _tune_prepared(store: SweepStore, study: Study, on_stage: Callable[[str], None] | None) -> Prepared:
    """The stored series, or — where the tune was stopped before it was written — prepared again
    from the data files (checked against the hashes the store pinned)."""
    prepared = stored_prepared(store)
    if prepared is not None:
        return prepared
    assert study.data is not None
    data = Path(study.data.file)
    if not data.is_file():
        raise InputError(
            f"{store.path} was stopped before its aligned series was stored, and its data file {data} is gone; "
            "restore the data file (the same one) and resume"
        )
    _, series = tune_study(data)
    prepared, report = prepare(series, say=on_stage)
    _keep_prepared(store, prepared, report, list(series.notes))
    return prepared


def run_tune(
    data: PathLike,
    store: PathLike,
    *,
    cluster: str | None = None,
    client: Any = None,
    progress: Progress | None = None,
    on_client: Callable[[Connection], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> RunSummary:
    """Tune the weights on a measured series (:mod:`tomosweep.sweep.tune`): create ``store`` and run the budget.

    Everything is read and checked, and the series aligned, before the cluster starts and
    before the store exists: bad input leaves nothing behind.
    """
    study, series = tune_study(data)
    study = with_cluster(study, cluster)
    _check_device(study)
    store = check_store_location(store)
    prepared, report = prepare(series, say=on_stage)
    elements = prepared.elements or (HAADF_ONLY,)
    with connect_study(study, client) as conn:
        _check_memory(study, conn, elements, n=prepared.n_det)
        if on_client:
            on_client(conn)
        inputs = tune_inputs(data, series.sources)
        with create_store(study, store, elements=elements, inputs=inputs) as opened:
            _keep_prepared(opened, prepared, report, list(series.notes))
            log.info("created %s for a tune of %s (%s)", store, data, conn.description)
            runner = _runner(study, opened, conn, progress=progress, trial_fn=run_tune_trial, task_data=prepared)
            return runner.run()


def _refuse_idle_rungs(store: SweepStore, new: Study, changes: list[str]) -> None:
    """Refuse an extension that raises ``ladder_trials`` where no cell can use what the rungs find.

    A rung's best points start a cell only in its initial phase (its first ``initial_points``
    trials, :func:`~tomosweep.sweep.runner.warm_points`); an extension that raises ``ladder_trials``
    alone on a study whose every cell is past it would spend the new rung trials on nothing."""
    grows = any(c.startswith(("n_haadf", "n_chem")) for c in changes)
    # with trials_per_cell raised too, the study itself goes on (the documented --extend of both)
    alone = all(c.startswith("ladder_trials") for c in changes)
    if grows or not alone or not changes:
        return
    per_cell: dict[tuple[str, int, int], int] = {}
    for r in store.records():
        per_cell[(r.method, r.n_haadf, r.n_chem)] = per_cell.get((r.method, r.n_haadf, r.n_chem), 0) + 1
    if all(per_cell.get((m, h, c), 0) >= new.budget.initial_points for m in new.methods for h, c in new.cells):
        raise SpecError(
            f"budget.ladder_trials is raised but every cell of {store.path} is past its "
            f"{new.budget.initial_points} initial points, the only trials a rung's best points start: the new rung "
            "trials would warm nothing. Raise trials_per_cell (or grow the grid) with it, or start a new study with "
            "the larger ladder"
        )


def refuse_tune(store: PathLike, question: str) -> None:
    """Refuse a question that needs a ground truth (``plan``, ``replicate``…) on a tune's store."""
    with SweepStore.open(store) as opened:
        if "data" in opened.spec:
            raise StoreError(
                f"{store} holds a tune of measured data: its values are a held-out loss, not an NRMSE against a "
                f"ground truth, so {question} needs a study of a simulated specimen (tomosweep run STUDY.toml)"
            )


def resume_study(
    store: PathLike,
    *,
    study: Study | PathLike | None = None,
    extend: bool = False,
    cluster: str | None = None,
    client: Any = None,
    progress: Progress | None = None,
    on_client: Callable[[Connection], None] | None = None,
    trial_fn: Callable[[TrialTask], TrialRecord] = run_trial,
    warm_start: PathLike | None = None,
) -> RunSummary:
    """Rebuild every optimiser from the stored trials and finish the budget.

    With ``study``, the file must equal the stored one; with ``extend=True`` it may
    also raise ``trials_per_cell`` or add tilt counts to the grid (nothing else).
    The stored ``[cluster]`` section is replaced by the given file's, if any: the same
    study may resume on another cluster.
    """
    with SweepStore.open(store, writable=True) as opened:
        refuse_damaged(opened)
        stored = stored_study(opened, to_run=True)
        refuse_damaged_ladder(opened.path, stored)
        new = stored
        if study is not None:
            if stored.is_tune and not isinstance(study, Study):  # a tune is extended with its data file
                new = tune_study(study)[0]
            else:
                new = _as_study(study)
            if new.content_hash() != stored.content_hash():
                if not extend:
                    raise SpecError(
                        f"the study file differs from the one stored in {store} (content hash "
                        f"{new.content_hash()[:12]}… against {stored.content_hash()[:12]}… stored). Resume without a "
                        "study file to finish the stored study, or pass --extend to raise the budget or grow the grid."
                    )
                _refuse_idle_rungs(opened, new, check_extension(stored, new))
        new = with_cluster(new, cluster)
        _check_device(new)
        elements = tuple(opened.elements) if new.is_tune else _elements(new)
        _check_inputs(opened, new)
        earlier = _earlier_trials(warm_start, new)
        prepared = _tune_prepared(opened, new, None) if new.is_tune else None
        if new.is_tune and trial_fn is run_trial:
            trial_fn = run_tune_trial
        # nothing is written before the cluster is up: a cluster that fails leaves the store as it was
        with connect_study(new, client) as conn:
            _check_memory(new, conn, elements, n=None if prepared is None else prepared.n_det)
            if new.content_hash() != stored.content_hash():
                opened.update_study(
                    spec=new.to_json(),
                    spec_hash=new.content_hash(),
                    n_haadf=new.acquisition.n_haadf,
                    n_chem=new.acquisition.n_chem,
                )
            else:
                opened.rebuild_maps()  # the driver may have died between a commit and its map update
            if on_client:
                on_client(conn)
            log.info("resuming %s: %d trials stored (%s)", store, opened.n_committed, conn.description)
            earlier = _climb(new, opened, conn, progress=progress, trial_fn=trial_fn) + earlier
            runner = _runner(
                new, opened, conn, progress=progress, trial_fn=trial_fn, warm_from=earlier, task_data=prepared
            )
            return runner.run()


def remove_stale_certificates(store: PathLike) -> list[Path]:
    """Remove the TLS certificate folders that drivers on this host left when killed; the removed.

    Looked for under the study's own certificate folder (its stored ``[cluster]``, when it
    is a batch one) and the default one; a store that cannot be read only has the default."""
    from tomosweep.cluster import tls

    bases = {tls.default_base()}
    try:
        with SweepStore.open(store) as opened:
            settings = stored_study(opened).cluster
        if settings.backend in JOBQUEUE and settings.tls is not False:
            from tomosweep.cluster.jobqueue import tls_base  # deferred: imports distributed

            bases.add(tls_base(settings))
    except TomosweepError:
        pass  # check reports the store's own problems
    return [folder for base in sorted(bases) for folder in tls.remove_leftovers(base)]


def worker_job_script(study: Study | PathLike, *, cluster: str | None = None) -> str:
    """The batch script a worker job of the study's slurm/pbs/lsf/sge cluster would run."""
    # deferred: imports distributed (seconds), needed by job-script only
    from tomosweep.cluster.jobqueue import job_script

    study = with_cluster(_as_study(study), cluster)
    if study.cluster.backend not in JOBQUEUE:
        raise ClusterError(
            f"backend {study.cluster.backend!r} submits no batch jobs; job scripts exist for {', '.join(JOBQUEUE)}"
        )
    return job_script(study.cluster, worker_environ())


def study_status(store: PathLike) -> Any:
    """A pandas table, one row per (method, cell): trials done / budget / failed, best NRMSE, best params."""
    with SweepStore.open(store) as opened:
        study = stored_study(opened)
        frame = best_params_frame(opened).rename(columns={"n_trials": "trials", "n_failed": "failed"})
    frame.insert(frame.columns.get_loc("trials") + 1, "budget", study.budget.trials_per_cell)
    if study.is_tune:  # a loss the data give, not an NRMSE against a truth
        frame = frame.rename(columns={"best_nrmse": "best_loss"})
        frame.insert(frame.columns.get_loc("best_loss") + 1, "loss", tune_objective(study, tuple(opened.elements)))
    return frame


def export_store(
    store: PathLike, out: PathLike, *, cell: tuple[int, int] | None = None, overwrite: bool = False
) -> list[Path]:
    """Write heatmaps (PNG+SVG), best-weights maps, best-params table, trials CSV/Parquet,
    convergence plots and, for ``cell``, each method's objective as its GP sees it.
    Files of an earlier export in ``out`` are replaced only with ``overwrite``."""
    with SweepStore.open(store) as opened:
        check_export_folder(opened, out, export_names(opened, cell), overwrite=overwrite)  # before any work
        surrogates = cell_surrogates(opened, cell) if cell is not None else None
        return export(opened, out, cell=cell, surrogates=surrogates, overwrite=overwrite)


def reconstruct_cell(
    store: PathLike,
    cell: tuple[int, int],
    out: PathLike,
    *,
    method: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, dict[str, float]]:
    """Rerun a cell's best trial and save its volumes (``.npz`` or ``.zarr``) with the NRMSE it gets."""
    check_output(out, overwrite=overwrite)  # before any work, and never onto a store
    with SweepStore.open(store) as opened:
        study = stored_study(opened, to_run=True)
        method = method or opened.methods[0]
        if method not in opened.methods:
            raise StoreError(f"method {method!r} is not in this store ({', '.join(opened.methods)})")
        found = opened.best(method, cell)
        if found is None:
            raise StoreError(f"cell {cell[0]},{cell[1]} has no finished {method} trial yet; run or resume the study")
        stored_nrmse, stored = found
        best = {name: stored[name] for name in study.searched(method)}
    data = build_cell_data(study, *cell)
    result = reconstruct(study, data, method, best)
    per_element = score(data, result.volume)

    volumes = np.maximum(to_numpy(result.volume), 0.0)
    metrics = {e: float(v) for e, v in zip(data.elements, per_element, strict=True)}
    metrics["mean"] = float(per_element.mean())
    specimen = Specimen.from_symbols(
        f"{study.name}-{method}-{cell[0]}x{cell[1]}",
        data.elements,
        volumes,
        info={
            "method": method,
            "cell": {"n_haadf": cell[0], "n_chem": cell[1]},
            "params": {**study.fixed(method), **best},
            "nrmse": metrics,
            "stored_nrmse": stored_nrmse,
        },
    )
    return save_specimen(specimen, out, overwrite=overwrite), metrics
