"""The ``tomosweep`` command: one typer app over the study commands (:mod:`.study`: run, resume,
status, check, export, reconstruct, methods, job-script), the live page (:mod:`.view`) and the
way to the microscope and back (:mod:`.microscope`: plan, replicate, reconstruct-data).

Every user mistake ends in one red line (exit status 2), never a traceback; Ctrl-C
stops the driver, keeps every finished trial and says how to resume (exit 130).
What one invocation carries from the global options to its command, and on to the line
that ends it, is a :class:`~.common.CliState` in typer's context object (``ctx.obj``).
"""

from __future__ import annotations

import errno
import functools
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tomosweep import __version__
from tomosweep.cli import microscope, study, view
from tomosweep.cli.common import CliState, console, out, setup_logging
from tomosweep.errors import TomosweepError
from tomosweep.results import SweepStore

app = typer.Typer(
    name="tomosweep",
    help="Bayesian hyperparameter sweeps for fused chemical electron tomography.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts name TOML tables ("[cluster]", "[tune]"): plain text, never rich markup that eats them
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        out.print(f"tomosweep {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="tomosweep's log on the terminal (-vv: debug)")
    ] = 0,
    log_file: Annotated[
        Path | None,
        typer.Option("--log-file", help="append tomosweep's log to this file (run/resume: instead of STORE.log)"),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="print tomosweep's version (from its git tag)"
        ),
    ] = False,
) -> None:
    """Bayesian hyperparameter sweeps for fused chemical electron tomography."""
    # main() hands its state in; an app invoked otherwise (typer's test runner) gets a fresh one
    setup_logging(ctx.ensure_object(CliState), verbose, log_file)


# the commands, in the order `tomosweep --help` lists them
app.command()(study.run)
app.command()(study.resume)
app.command()(study.status)
app.command()(view.view)
app.command()(study.check)
app.command()(study.export)
app.command()(study.reconstruct)
app.command()(study.methods)
app.command("job-script")(study.job_script)
app.command()(microscope.plan)
app.command()(microscope.replicate)
app.command("reconstruct-data")(microscope.reconstruct_data)
app.command()(microscope.tune)


def _swallows(frame: Any) -> bool:
    """Whether an exception raised in ``frame`` would be printed and dropped, not propagated: a
    weak reference's callback, a ``__del__`` or a garbage-collector callback (the collector runs
    them anywhere: a large matplotlib figure makes many ``__del__``, and the scheduler of an
    embedded cluster registers a callback in ``gc.callbacks``)."""
    import gc

    callbacks = {getattr(getattr(cb, "__func__", cb), "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code in callbacks or code.co_name == "__del__":
            return True
        if code.co_filename.endswith(("weakref.py", "_weakrefset.py")):
            return True
        frame = frame.f_back
    return False


def _deliver_later(signum: int) -> None:
    """Send ``signum`` to the main thread again shortly, from a timer thread: raised now it would
    be printed and dropped (:func:`_swallows`). Not ``_thread.interrupt_main``, which runs the
    handler at the very next bytecode, still inside the same callback, so a long callback
    recursed until Python's recursion limit; a real signal also wakes a main thread blocked in
    a wait, where a scheduled call would only run once the wait ended."""
    main = threading.main_thread().ident
    if main is None:  # pragma: no cover - the main thread always has an ident once it runs
        return
    timer = threading.Timer(0.05, signal.pthread_kill, (main, signum))
    timer.daemon = True
    timer.start()


_raised: list[int] = []  # the signal whose KeyboardInterrupt the handlers raised last


def _on_unraisable(previous: Any, unraisable: Any) -> None:
    """``sys.unraisablehook``: a KeyboardInterrupt of Ctrl-C or SIGTERM that Python swallowed in a
    callback :func:`_swallows` does not know (any function can be a weak reference's callback;
    importlib's module locks have one) is delivered again instead of printed and lost."""
    if unraisable.exc_type is KeyboardInterrupt and _raised:
        _deliver_later(_raised[-1])
        return
    previous(unraisable)


def _on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C: Python's own KeyboardInterrupt, but never raised where it would be printed and
    dropped (:func:`_swallows`): there it is delivered again, once the callback has returned."""
    if _swallows(frame):
        _deliver_later(signal.SIGINT)
        return
    _raised.append(signal.SIGINT)
    raise KeyboardInterrupt


def _on_sigterm(state: CliState, signum: int, frame: Any) -> None:
    """SIGTERM (a batch system's walltime, `kill`): stop like Ctrl-C, exit 143."""
    state.terminated = True
    if _swallows(frame):
        # raised here it would be dropped and the command would run on: deliver it again, to be
        # handled once the callback has returned
        _deliver_later(signal.SIGTERM)
        return
    _raised.append(signal.SIGTERM)
    raise KeyboardInterrupt  # click turns it into its Abort, like Ctrl-C


def _store_exists(state: CliState) -> bool:
    """Whether the command's store is there to continue: stopped before it was created (a plugin's
    import, a cluster that never came up), there is nothing to resume."""
    if state.store is None:
        return False
    try:
        SweepStore.open(state.store).close()
    except TomosweepError:
        return False
    return True


def _interrupted(state: CliState, code: int) -> SystemExit:
    if state.terminated:
        code = 143
    what = "terminated" if code == 143 else "interrupted"
    kept = state.kept or "every finished trial is stored"
    if state.store is not None and not _store_exists(state):
        console.print(f"[yellow]{what}[/] before the store {escape(str(state.store))} was made", highlight=False)
        return SystemExit(code)
    where = state.again or (f"tomosweep resume {shlex.quote(str(state.store))}" if state.store is not None else None)
    if where is None:  # a command that had not started writing
        console.print(f"[yellow]{what}[/]", highlight=False)
        return SystemExit(code)
    console.print(f"[yellow]{what}[/]: {escape(kept)}; continue with `{escape(where)}`", highlight=False)
    return SystemExit(code)


def _os_error_line(exc: OSError, state: CliState) -> str:
    """One line for an operating-system error: what failed, where, and what is kept."""
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = f"no space left on the device{where}"
    elif exc.errno == errno.EROFS:
        what = f"the file system is read-only{where}"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        what = f"permission denied{where}"
    else:
        what = f"{exc.strerror or exc}{where}"
    if state.store is not None and not _store_exists(state):
        return f"{what}; the store {state.store} was not made"
    if state.again:
        return f"{what}; {state.kept or 'every finished result is stored'}: continue with `{state.again}`"
    if state.store is not None:
        return f"{what}; every committed trial is kept: continue with `tomosweep resume {state.store}`"
    return f"{what}; nothing was written"


def dependency_warnings_to_log() -> None:
    """Warnings of dependencies (mrcfile, numpy, pydantic, …) go to tomosweep's log, not the terminal
    (STYLE 11: the terminal shows what the user asked for); ``-v`` shows the log."""
    logging.captureWarnings(False)  # reinstalled: something may have replaced warnings.showwarning since
    logging.captureWarnings(True)
    captured = logging.getLogger("py.warnings")
    captured.propagate = False
    tomosweep_log = logging.getLogger("tomosweep")
    if not any(isinstance(h, _ToTomosweepLog) for h in captured.handlers):
        captured.addHandler(_ToTomosweepLog(tomosweep_log))


class _ToTomosweepLog(logging.Handler):
    """Hands captured warnings to the ``tomosweep`` logger's handlers (its file, and ``-v``)."""

    def __init__(self, target: Any) -> None:
        super().__init__()
        self._target = target

    def emit(self, record: Any) -> None:
        record.levelno, record.levelname = 30, "WARNING"
        for handler in self._target.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def main() -> None:
    """Entry point: run the app, turning tomosweep errors, Ctrl-C and SIGTERM into clean exits.

    Exit status: 0 done, 2 a user error (one ``error:`` line), 130 interrupted by
    Ctrl-C, 143 stopped by SIGTERM; after 130 or 143 every finished trial is committed.
    """
    state = CliState()
    signal.signal(signal.SIGTERM, functools.partial(_on_sigterm, state))
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the shell ignores it
        signal.signal(signal.SIGINT, _on_sigint)
    sys.unraisablehook = functools.partial(_on_unraisable, sys.unraisablehook)
    dependency_warnings_to_log()
    try:
        code = app(standalone_mode=False, obj=state)
    except TomosweepError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise _interrupted(state, 130) from None
    except OSError as exc:  # a full or read-only disk, a permission: one line, the details in the log
        logging.getLogger("tomosweep").debug("%s", exc, exc_info=True)
        console.print(f"[red]error:[/] {escape(_os_error_line(exc, state))}", highlight=False)
        raise SystemExit(2) from None
    except typer.TyperException as exc:  # usage errors (click's, vendored by typer): a missing option, a bad value
        command = getattr(getattr(exc, "ctx", None), "command_path", None) or "tomosweep"
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        # typer checks a value with pydantic, whose prefix says nothing to a user
        message = message.replace(": Value error, ", ": ", 1)
        console.print(f"[red]error:[/] {escape(message)}", highlight=False)
        console.print(f"(see `{escape(command)} --help`)", highlight=False)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except typer.Abort:
        raise _interrupted(state, 130) from None
    # click, outside standalone mode, *returns* the exit status of an interrupted command
    # (130 after Ctrl-C) instead of raising it: pass it on, or a batch script sees success
    if isinstance(code, int) and code != 0:
        raise _interrupted(state, code) if code in (130, 143) else SystemExit(code)
    if state.terminated:  # the signal came as the command ended: say so, and exit as terminated
        raise _interrupted(state, 143)
