"""The driver loop: keep every worker busy, record each trial exactly once, never lose one.

One search per (method, cell) (:class:`~tomosweep.search.base.Search`: the cell's own GP, a
cell of the method's map-wide GP, or random search) proposes points; the runner submits trials
as Dask tasks across all cells at once (the cell with the fewest trials asked goes next), and as
each finishes it appends the record to the store together with the searches' new state (the
commit point), tells the search, and refills the queue.

Knowledge shared across cells: while a cell is in its start it tries the warm starts of
:mod:`tomosweep.search.warm` first (its neighbours' bests, an earlier study's or the rung below's;
``[budget] warm_start``). A cell whose search is done (:attr:`~tomosweep.search.base.Search.done`:
converged, or its finite space exhausted) stops early.

Failures, in the words of the store:

- a trial that raises or returns a non-finite NRMSE comes back as a *failed* record
  (see :func:`~tomosweep.sweep.trial.run_trial`) and is stored like any other;
- a worker that dies mid-trial makes Dask rerun its tasks elsewhere; a task that
  keeps killing workers ends in ``KilledWorker``. Dask cannot tell the culprit from
  innocent trials queued on the same worker, so the runner keeps its own ledger and
  resubmits each such trial up to ``max_worker_deaths`` times before recording it as
  failed. Each trial is appended once, when its future is done — never twice;
- a trial still running after the study's time limit (``[budget] trial_timeout_s``, see
  :func:`~tomosweep.sweep.spec.trial_timeout`) is cancelled and recorded as failed,
  naming where it was stuck, and its worker is restarted: a thread cannot be stopped,
  only its process. A ``[plugins]`` module whose import hangs on the workers is such a
  trial (the study is read, and its plugins imported, inside the trial).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from tomosweep.cluster.local import revive_lost_workers
from tomosweep.errors import ClusterError, StoreError
from tomosweep.results import FAILED, OK, PRUNED, SweepStore, TrialRecord
from tomosweep.search.base import EXHAUSTED, Proposal, Search, derived_seed, unreadable
from tomosweep.search.cell import cell_search
from tomosweep.search.map import map_searches, map_states, restore_maps
from tomosweep.search.warm import warm_points
from tomosweep.sweep.methods import METHODS
from tomosweep.sweep.spec import Study, trial_timeout
from tomosweep.sweep.trial import CHECKPOINT, TrialTask, run_trial
from tomosweep.view.heartbeat import Heartbeat

Key = tuple[str, int, int]  # (method, n_haadf, n_chem)
__all__ = ["EXHAUSTED", "Runner", "RunSummary", "build_searches", "searches", "state_problems"]


log = logging.getLogger(__name__)


class Progress(Protocol):
    """What the runner reports to (a progress bar, a log, a test)."""

    def start(self, *, total: int, done: int, failed: int, best: float | None) -> None:
        """A run begins: ``done`` of ``total`` trials are in the store, ``failed`` of them failed."""
        ...

    def update(self, record: TrialRecord, *, done: int, failed: int, best: float | None) -> None:
        """``record`` was committed; the counts and the best NRMSE after it."""
        ...

    def close(self) -> None:
        """The run ended (finished, stopped or failed)."""
        ...


@dataclass(frozen=True)
class RunSummary:
    """What a run did: trials in the store now, how many this run added, failures, time."""

    store: str
    n_trials: int
    n_new: int
    n_failed: int
    budget: int
    wall_time_s: float
    exhausted: tuple[Key, ...] = ()  # cells that stopped before their cap (see stop_reasons)
    exhausted_unused: int = 0  # budget those cells did not need
    # why each of them stopped: its finite space evaluated, or the adaptive budget's reason
    stop_reasons: tuple[tuple[Key, str], ...] = ()

    @property
    def complete(self) -> bool:
        """Whether the whole budget is spent (cells whose space ran out count as spent)."""
        return self.n_trials + self.exhausted_unused >= self.budget


@dataclass
class _Ticket:
    key: Key
    params: dict[str, float]
    ask_id: int
    attempt: int = 1
    proposed_by: str = ""


def _restart_worker(client: Any, worker: str) -> None:
    """Restart the worker a timed-out trial hangs on (a thread cannot be stopped; its process can);
    said in the log when it cannot be (a worker without a nanny, a cluster closing)."""
    try:
        status = client.restart_workers([worker], raise_for_error=False)
    except Exception as exc:
        if getattr(client, "status", "running") in ("closing", "closed"):  # the study ended meanwhile
            log.debug("restart of worker %s ended with the cluster: %s", worker, exc)
        else:
            log.warning("could not restart worker %s after a timed-out trial: %s", worker, exc)
        return
    said = (status or {}).get(worker, "OK")
    if said != "OK":
        log.warning("restarting worker %s after a timed-out trial: %s", worker, said)


def stuck_at(frames: Any) -> str:
    """Where a hung trial's thread was, from its call stack (distributed's text frames), for its error.

    A trial stuck in an import (a plugin module that hangs on the workers) names the module."""
    lines = [str(frame).strip().splitlines()[0] for frame in frames or () if str(frame).strip()]
    if not lines:
        return ""
    imports = [line for line in lines if line.endswith("in <module>")]
    where = imports[-1] if imports else lines[-1]
    return f", {'while importing' if imports else 'at'} {where.removeprefix('File ')}"


def stop_reason(search: Search) -> str:
    """Why a cell asked no more points: the adaptive budget's reason, else its finite space is spent."""
    return search.done or EXHAUSTED


def state_key(key: Key) -> str:
    """How a cell's optimiser state is keyed in the store (``method/n_haadf/n_chem``)."""
    return "/".join(str(v) for v in key)


def searches(study: Study) -> dict[Key, Search]:
    """One fresh search per (method, cell): the cell's own GP, a cell of its method's map-wide GP
    (``[budget] surrogate = "map"``), or random search (``sampler = "random"``)."""
    opts: dict[Key, Search] = {}
    for method in study.methods:
        space = {}
        for name, rng in study.searched(method).items():
            space[name] = (rng.low, rng.high, rng.prior, study.param_kind(method, name))
        options: dict[str, Any] = {
            "n_initial": study.budget.initial_points,
            "liar": study.budget.liar,
            "stop_tolerance": study.budget.stop_tolerance,
            "stop_patience": study.budget.stop_patience,
        }

        def seed_of(cell: tuple[int, int], method: str = method) -> int:
            return derived_seed(study.seed, "optimiser", method, *cell)

        if study.budget.surrogate == "map" and study.budget.sampler == "gp":
            cells = map_searches(method, study.cells, space, seed=study.seed, cell_seed=seed_of, **options)
            opts.update({(method, h, c): search for (h, c), search in cells.items()})
        else:
            for h, c in study.cells:
                opts[(method, h, c)] = cell_search(space, sampler=study.budget.sampler, seed=seed_of((h, c)), **options)
    return opts


def _restore(opts: dict[Key, Search], states: Any) -> list[tuple[str, str]]:
    """Give every optimiser and map surrogate its stored state; ``(key, why)`` for each state
    that the code which continues the search could not continue from (left fresh)."""
    if not isinstance(states, Mapping):
        return [("", f'the stored search states (attribute "optimiser") are a {type(states).__name__}, not a table')]
    problems = restore_maps(opts, states)
    for key, opt in opts.items():
        state = states.get(state_key(key))
        if state is None:
            opt.fresh_resume()  # a store without state: continue the seed sequence
            continue
        try:
            opt.restore(state)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append((state_key(key), unreadable(exc)))
    return problems


def state_problems(study: Study, store: SweepStore) -> list[tuple[str, str]]:
    """``(key, why)`` for every stored search state of ``store`` that a resume of ``study`` would
    refuse: each is restored by the very code a resume continues from (``key`` "" for the
    attribute as a whole). Reads no trial."""
    return _restore(searches(study), store.attrs.get("optimiser") or {})


def build_searches(study: Study, store: SweepStore) -> dict[Key, Search]:
    """One search per (method, cell), told every stored trial of that cell and
    given its stored state (resume)."""
    opts = searches(study)
    for record in store.records():
        opt = opts.get((record.method, record.n_haadf, record.n_chem))
        if opt is not None:
            opt.tell(record.params, record.nrmse if record.ok else None)
    problems = _restore(opts, store.attrs.get("optimiser") or {})
    if problems:
        key, why = problems[0]
        raise StoreError(
            f"store {store.path} is damaged: "
            + (f"the stored search state {key} is unreadable ({why})" if key else why)
            + f". The trials are intact: `tomosweep check --repair {store.path}` resets "
            + ("it" if len(problems) == 1 else f"all {len(problems)}")
            + " (the search restarts from the trials), then resume"
        )
    return opts


NO_WORKER_TIMEOUT_ENV = "TOMOSWEEP_NO_WORKER_TIMEOUT_S"
NO_WORKER_TIMEOUT_S = 120.0  # long enough for a batch job to be requeued or a nanny to restart its worker


def no_worker_timeout() -> float:
    """Seconds the driver waits with no worker connected before it stops (``TOMOSWEEP_NO_WORKER_TIMEOUT_S``)."""
    raw = os.environ.get(NO_WORKER_TIMEOUT_ENV)
    if raw is None:
        return NO_WORKER_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ClusterError(f"{NO_WORKER_TIMEOUT_ENV}={raw!r}: give a positive number of seconds")
    return value


PRUNE_MIN_TRIALS = 5  # finished trials of a cell before its median says anything
PRUNE_FIRST = 2 * CHECKPOINT  # no trial is judged on its first few iterations


def prune_thresholds(curves: list[list[tuple[int, float]]]) -> dict[int, float]:
    """The median stopping rule's thresholds (Golovin et al. 2017, §3.2.2).

    ``curves`` are the intermediate NRMSE of a cell's finished trials, ``[(iteration,
    NRMSE), …]``. At each checkpoint the threshold is the median over those trials of
    their best-so-far NRMSE there (a trial that stopped earlier, converged, counts with
    its best). Only checkpoints from ``PRUNE_FIRST`` on, and only with at least
    ``PRUNE_MIN_TRIALS`` trials.
    """
    curves = [c for c in curves if c]
    if len(curves) < PRUNE_MIN_TRIALS:
        return {}
    last = max(k for c in curves for k, _ in c)
    out = {}
    for k in range(PRUNE_FIRST, last + 1, CHECKPOINT):
        bests = [min(v for i, v in c if i <= k) for c in curves if c[0][0] <= k]
        if len(bests) >= PRUNE_MIN_TRIALS:
            out[k] = float(np.median(bests))
    return out


class Runner:
    """Run a study's remaining budget on a Dask client, writing to an open (locked) store."""

    def __init__(
        self,
        study: Study,
        store: SweepStore,
        client: Any,
        *,
        progress: Progress | None = None,
        trial_fn: Callable[[TrialTask], TrialRecord] = run_trial,
        max_worker_deaths: int = 2,
        no_worker_timeout_s: float | None = None,
        queue_extra: int = 1,
        slots: int | None = None,
        resources: dict[str, float] | None = None,
        warm_from: list[TrialRecord] | None = None,
        task_data: Any = None,
        trial_timeout_s: float | None = None,
    ) -> None:
        self.study = study
        self.store = store
        self.client = client
        self.progress = progress
        self.trial_fn = trial_fn
        self.max_worker_deaths = max_worker_deaths
        self.no_worker_timeout_s = no_worker_timeout() if no_worker_timeout_s is None else no_worker_timeout_s
        self.queue_extra = queue_extra
        self.slots = slots
        self.resources = resources
        # what the warm starts read of an earlier study: its finished trials as plain values
        self.earlier = [(r.method, r.cell, r.params, r.nrmse) for r in warm_from or [] if r.ok]
        self.task_data = task_data  # a tune's prepared series, carried by every trial (TrialTask.data)
        if trial_timeout_s is None:
            trial_timeout_s = trial_timeout(study, n=getattr(task_data, "n_det", None))
        self.trial_timeout_s = trial_timeout_s
        self._study_json = json.dumps(study.to_json(), sort_keys=True)
        self._seq = itertools.count()
        self._capacity_at = -math.inf
        self._capacity_cached = 1 + queue_extra

    def _capacity(self) -> int:
        """Trials to keep in flight: the cluster's ``slots`` or its live worker threads, + ``queue_extra``.

        A cluster that knows its size (local: its workers; batch: ``max_jobs`` × workers
        per job) gives ``slots``, so trials wait in the scheduler for jobs still queued
        and an adaptive cluster sees the work that makes it grow. Otherwise the live
        threads are asked of the scheduler at most once a second: asking costs a round
        trip per finished trial otherwise, and once a second still follows a cluster
        that grows or shrinks.
        """
        if self.slots is not None:
            return max(1, self.slots) + self.queue_extra
        now = time.monotonic()
        if now - self._capacity_at > 1.0:
            try:
                threads = sum(self.client.nthreads().values())
            except Exception:  # a scheduler that is restarting answers nothing for a moment
                threads = 0
            self._capacity_cached = max(1, threads) + self.queue_extra
            self._capacity_at = now
        return self._capacity_cached

    def run(self) -> RunSummary:
        """Spend the study's remaining budget; return what this run did."""
        return _Pass(self).run()

    def _outcome(self, future: Any, ticket: _Ticket, deaths: dict[int, int], killed: type) -> TrialRecord | None:
        method, h, c = ticket.key
        base = {"method": method, "n_haadf": h, "n_chem": c, "params": ticket.params, "attempts": ticket.attempt}
        if future.status == "finished":
            record = future.result()
            if not isinstance(record, TrialRecord):
                return TrialRecord(
                    **base, status=FAILED, error=f"trial returned {type(record).__name__}, not a TrialRecord"
                )
            return replace(record, attempts=ticket.attempt)
        if future.status == "cancelled":
            raise ClusterError(
                "the scheduler cancelled a running trial (the cluster was lost or shut down); every finished "
                f"trial is stored — continue with `tomosweep resume {self.store.path}`"
            )
        exc = future.exception()
        if exc is None:  # the result went with its worker ("lost"): the trial itself did nothing wrong
            deaths[ticket.ask_id] = deaths.get(ticket.ask_id, 0) + 1
            if deaths[ticket.ask_id] <= self.max_worker_deaths:
                ticket.attempt += 1
                return None
            return TrialRecord(
                **base,
                status=FAILED,
                error=(
                    f"lost to worker deaths: the workers running this trial died or left {deaths[ticket.ask_id]} "
                    f"times over {ticket.attempt} submissions (future status {future.status!r}); the trial itself "
                    "raised nothing"
                ),
                finished_at=time.time(),
            )
        if isinstance(exc, killed):
            deaths[ticket.ask_id] = deaths.get(ticket.ask_id, 0) + 1
            if deaths[ticket.ask_id] <= self.max_worker_deaths:
                ticket.attempt += 1
                return None
            return TrialRecord(
                **base,
                status=FAILED,
                error=(
                    f"the worker running this trial died {deaths[ticket.ask_id]} times over "
                    f"{ticket.attempt} submissions (KilledWorker: {exc}); out of memory or a crash in native code?"
                ),
                finished_at=time.time(),
            )
        return TrialRecord(**base, status=FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=time.time())

    @staticmethod
    def _best(opts: dict[Key, Search]) -> float | None:
        values = [found[0] for o in opts.values() if (found := o.best()) is not None and math.isfinite(found[0])]
        return min(values) if values else None


class _Pass:
    """One run of the driver loop: the optimisers, the trials in flight, and what was committed."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        study, store = runner.study, runner.store
        self.opts = build_searches(study, store)
        self.budget_per = study.budget.trials_per_cell
        cap = self.budget_per * len(self.opts)
        self.total = min(cap, study.budget.total) if study.budget.total else cap
        self.in_grid = sum(min(o.n_told, self.budget_per) for o in self.opts.values())
        self.failed = sum(o.n_failed for o in self.opts.values())
        self.n_start = store.n_committed
        self.best = runner._best(self.opts)
        self.active: dict[Any, _Ticket] = {}
        self.deaths: dict[int, int] = {}
        self.exhausted: set[Key] = set()
        self.curves: dict[Key, list[list[tuple[int, float]]]] = {k: [] for k in self.opts}
        for r in store.records():
            key = (r.method, r.n_haadf, r.n_chem)
            if r.status == OK and key in self.curves and r.info.get("curve"):
                self.curves[key].append([(int(k), float(v)) for k, v in r.info["curve"]])
        self.dirty: set[Key] = set()  # cells whose optimiser state changed since the last commit
        self.cells = list(study.cells)
        self.queue: Any = None
        self.heartbeat: Any = None
        self.no_worker_since: float | None = None
        self.workers_asked_at = -math.inf
        self.seen_worker = False
        self.running_since: dict[Any, float] = {}  # future -> when it was first seen executing
        self.stacks_asked_at = -math.inf

    def run(self) -> RunSummary:
        from distributed import as_completed  # deferred: distributed takes seconds to import
        from distributed.scheduler import KilledWorker

        runner, store = self.runner, self.runner.store
        t0 = time.perf_counter()
        if runner.progress:
            runner.progress.start(total=self.total, done=self.in_grid, failed=self.failed, best=self.best)
        log.info(
            "study %s: %d of %d trials done, %d cells", runner.study.name, self.in_grid, self.total, len(self.opts)
        )
        self.queue = as_completed()
        self.heartbeat = Heartbeat(store.path, runner.client, budget=self.total).start()  # for `tomosweep view`
        finished = False
        try:
            self.fill()
            while not self.queue.is_empty():
                if not self.queue.has_ready():
                    self.watch_workers()
                    self.watch_trials()
                    time.sleep(0.02)
                    continue
                for future in self.queue.next_batch(block=False):
                    self.finish(future, KilledWorker)
                self.no_worker_since = None
            finished = True
        finally:
            self.heartbeat.stop(finished=finished)
            for future in self.active:
                future.cancel()
            if runner.progress:
                runner.progress.close()
        summary = RunSummary(
            store=str(store.path),
            n_trials=store.n_committed,
            n_new=store.n_committed - self.n_start,
            n_failed=self.failed,
            budget=self.total,
            wall_time_s=time.perf_counter() - t0,
            exhausted=tuple(sorted(self.exhausted)),
            exhausted_unused=sum(max(0, self.budget_per - self.opts[k].n_told) for k in self.exhausted),
            stop_reasons=tuple((k, stop_reason(self.opts[k])) for k in sorted(self.exhausted)),
        )
        log.info("run finished: %d new trials, %d failed, %.1f s", summary.n_new, self.failed, summary.wall_time_s)
        return summary

    def watch_workers(self) -> None:
        """Stop with a clear message when no worker has been connected for the timeout while trials
        wait: a cluster whose workers all died (and none comes back) would otherwise be waited on
        forever. Asked of the scheduler at most once a second."""
        now = time.monotonic()
        if now - self.workers_asked_at < 1.0:
            return
        self.workers_asked_at = now
        try:
            workers = len(self.runner.client.nthreads())
        except Exception:  # a scheduler that is restarting (or gone) answers nothing: as no worker
            workers = 0
        try:
            revived = revive_lost_workers(self.runner.client)
        except Exception as exc:  # a cluster closing under us: nothing to open
            log.debug("could not check the local cluster's workers: %s", exc)
            revived = []
        if revived:
            log.warning(
                "the local cluster had closed worker %s while it restarted; opened it again", ", ".join(revived)
            )
        if workers:
            self.seen_worker = True
            self.no_worker_since = None
            return
        if not self.seen_worker:
            return  # a batch cluster whose first jobs are still queued is not a dead one
        if self.no_worker_since is None:
            self.no_worker_since = now
            log.warning("no worker is connected; waiting up to %.0f s for one", self.runner.no_worker_timeout_s)
            return
        if now - self.no_worker_since >= self.runner.no_worker_timeout_s:
            store = self.runner.store
            raise ClusterError(
                f"no worker for {now - self.no_worker_since:.0f} s and {len(self.active)} trial(s) waiting: every "
                f"worker is gone and none came back. The {store.n_committed} committed trials are safe; restart "
                f"the cluster (or fix what kills its workers) and run `tomosweep resume {store.path}`"
            )

    def watch_trials(self) -> None:
        """Stop each trial that has been executing for longer than the time limit.

        The clock of a trial starts when a worker is first seen executing it (its task's call
        stack, asked of the workers at most once a second), so time waiting in the scheduler
        for a worker or a batch job does not count."""
        limit = self.runner.trial_timeout_s
        now = time.monotonic()
        if not self.active or now - self.stacks_asked_at < min(1.0, limit / 4):
            return
        self.stacks_asked_at = now
        # only the trials still running: the scheduler logs an error (a traceback, outside the CLI's
        # logging) for every key it has already released
        by_key = {future.key: future for future in self.active if not future.done()}
        if not by_key:
            return
        try:
            stacks = self.runner.client.call_stack(keys=list(by_key))
        except Exception:  # a restarting scheduler answers nothing for a moment
            return
        executing = {
            by_key[key]: (worker, frames)
            for worker, tasks in (stacks or {}).items()
            for key, frames in (tasks or {}).items()
            if key in by_key
        }
        for future in list(self.running_since):
            if future not in executing:  # finished, or rescheduled after its worker left: a new start
                del self.running_since[future]
        for future, (worker, frames) in executing.items():
            elapsed = now - self.running_since.setdefault(future, now)
            if elapsed > limit:
                self.time_out(future, worker, frames, elapsed)

    def time_out(self, future: Any, worker: str, frames: Any, elapsed: float) -> None:
        """Record a trial that ran past the limit as failed, and restart the worker it hangs on."""
        runner = self.runner
        ticket = self.active.pop(future)
        self.running_since.pop(future, None)
        future.cancel()
        method, h, c = ticket.key
        record = TrialRecord(
            method=method,
            n_haadf=h,
            n_chem=c,
            params=ticket.params,
            status=FAILED,
            attempts=ticket.attempt,
            error=(
                f"timed out after {elapsed:.0f} s ([budget] trial_timeout_s = {runner.trial_timeout_s:g})"
                f"{stuck_at(frames)}; its worker was restarted"
            ),
            finished_at=time.time(),
        )
        # in a thread of its own: restart_workers returns only once the worker is back (or after
        # its timeout, up to minutes), and the study's other trials go on meanwhile
        threading.Thread(
            target=_restart_worker, args=(runner.client, worker), name="tomosweep-restart-worker", daemon=True
        ).start()
        self.commit(future, ticket, record)

    def next_key(self) -> Key | None:
        """The open cell with the fewest trials asked (fewest first keeps the grid even)."""
        opts = self.opts
        open_keys = [k for k, o in opts.items() if k not in self.exhausted and o.n_spent < self.budget_per]
        if not open_keys or sum(o.n_spent for o in opts.values()) >= self.total:
            return None
        return min(open_keys, key=lambda k: opts[k].n_spent)

    def submit(self, ticket: _Ticket) -> None:
        runner = self.runner
        method, h, c = ticket.key
        prune = runner.study.budget.prune and METHODS[method].prunable
        thresholds = prune_thresholds(self.curves[ticket.key]) if prune else None
        task = TrialTask(
            runner._study_json,
            method,
            h,
            c,
            ticket.params,
            ticket.attempt,
            prune=thresholds or None,
            data=runner.task_data,
        )
        name = f"trial-{method}-{h}x{c}-{next(runner._seq)}-{uuid.uuid4().hex[:12]}"
        future = runner.client.submit(runner.trial_fn, task, key=name, pure=False, resources=runner.resources)
        self.active[future] = ticket
        self.queue.add(future)
        self.heartbeat.set_running(state_key(t.key) for t in self.active.values())
        log.debug("submitted %s (%s): %s", name, ticket.proposed_by, ticket.params)

    def fill(self) -> None:
        """Ask the optimisers for points until every slot of the cluster has a trial."""
        runner, study = self.runner, self.runner.study
        capacity = runner._capacity()
        while len(self.active) < capacity:
            key = self.next_key()
            if key is None:
                return
            ask_id = next(runner._seq)
            opt = self.opts[key]
            if study.budget.warm_start and opt.n_spent < opt.n_initial:
                opt.set_warm_start(warm_points(key, self.opts, self.cells, runner.earlier))
            proposal: Proposal | None = opt.ask(ask_id)
            self.dirty.add(key)
            if proposal is None:
                self.exhausted.add(key)
                log.info("%s: %s; the cell stops", state_key(key), stop_reason(opt))
                continue
            # the trial and its record carry the full setting; the optimiser reads its own names
            params = {**study.fixed(key[0]), **proposal.params}
            self.submit(_Ticket(key, params, ask_id, proposed_by=proposal.by))

    def finish(self, future: Any, killed: type) -> None:
        """Commit a finished trial (or resubmit it after a worker death), tell its optimiser, refill."""
        runner = self.runner
        ticket = self.active.pop(future, None)
        if ticket is None:  # a timed-out trial's cancelled future, recorded already
            future.release()
            return
        self.running_since.pop(future, None)
        record = runner._outcome(future, ticket, self.deaths, killed)
        future.release()
        if record is None:  # resubmitted after a worker death
            log.warning("%s: its worker died; resubmitted (attempt %d)", state_key(ticket.key), ticket.attempt)
            self.submit(ticket)
            return
        self.commit(future, ticket, record)

    def commit(self, future: Any, ticket: _Ticket, record: TrialRecord) -> None:
        """Append a trial's record with the optimisers' new state, tell its optimiser, refill."""
        runner, store = self.runner, self.runner.store
        self.heartbeat.set_running(state_key(t.key) for t in self.active.values())
        opt = self.opts[ticket.key]
        # a pruned trial is told the NRMSE it had reached: worse than the cell's median
        known = record.ok or record.status == PRUNED
        opt.tell(ticket.params, record.nrmse if known else None, key=ticket.ask_id)
        if record.ok and record.info.get("curve"):
            self.curves[ticket.key].append([(int(k), float(v)) for k, v in record.info["curve"]])
        store.append(
            replace(record, task_key=str(future.key), proposed_by=ticket.proposed_by),
            optimiser={**{state_key(k): self.opts[k].state() for k in self.dirty}, **map_states(self.opts)},
        )
        self.dirty.clear()
        self.in_grid += 1
        self.failed += 1 if record.status == FAILED else 0
        if record.status == FAILED:
            log.warning("%s: trial failed: %s", state_key(ticket.key), record.error)
        else:
            log.info("%s: %s NRMSE %.4f (%s)", state_key(ticket.key), record.status, record.nrmse, ticket.proposed_by)
        if record.ok and (self.best is None or record.nrmse < self.best):
            self.best = record.nrmse
        if runner.progress:
            runner.progress.update(record, done=self.in_grid, failed=self.failed, best=self.best)
        self.fill()
