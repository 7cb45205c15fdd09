"""The reconstruction methods a study can sweep, and the parameters each one exposes.

Each method is a thin adapter from a prepared cell (:class:`CellData`) and a dict of
parameter values to a solver call in :mod:`tomosweep.solvers`. The solver maths live
there; here is only which data each method sees and which keywords it is given.

Data scale. Schwartz 2024 eq. 1 asks one set of element maps ``x`` to explain both the
HAADF series and every chemical series, so, as in the paper's simulations, each
simulated series is divided by its dose (back to specimen units) and ``ε`` is each
chemical map's known background in the same units. SIRT, the conventional baseline,
gets the background-subtracted maps (its best input); Poisson-ML keeps the background
in its model. HEBT also gets the background-subtracted maps (its regression, Yuan 2021
eq. 15, has no intercept) and the HAADF recorded alongside each chemical map, so it runs
on any grid, nested or not; it estimates its own response ratios, so the scale of its
input does not matter.

Weights. ``lambda_haadf`` of ``fused`` is relative to the balance point of the data
(:attr:`tomosweep.solvers.FusedStart.balance`): 1 means the HAADF and chemical terms
curve equally at the chemical-only start, whatever the units, size or dose, so one
default range serves every specimen. The start and the balance are computed once per
cell and worker (:func:`cell_start`) and shared by every fused and Poisson-ML+TV trial
of the cell; the absolute λ1 is in each trial's record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from tomosweep.errors import InputError, TomosweepError
from tomosweep.plugins import Registry
from tomosweep.solvers import (
    FusedStart,
    Projector,
    Result,
    fused,
    fused_start,
    hebt,
    poisson_ml,
    poisson_ml_tv,
    sirt_per_element,
)
from tomosweep.solvers.result import Callback


@dataclass(frozen=True)
class CellData:
    """Everything a method needs for one grid cell, built once per worker and cell."""

    elements: tuple[str, ...]
    truth: np.ndarray | None  # (n_el, n, n, n_x) ground truth; None for measured data
    haadf_projector: Projector | None  # None, and the HAADF series too, for measured data without HAADF
    chem_projector: Projector
    haadf: np.ndarray | None  # (n_haadf, n_det, n_x), specimen units
    chem: np.ndarray  # (n_el, n_chem, n_det, n_x), specimen units
    eps: np.ndarray  # (n_el,) chemical background, specimen units
    gamma: float
    # HAADF recorded alongside each chemical map, specimen units (HEBT's pairing, Yuan 2021 eq. 15)
    haadf_at_chem: np.ndarray | None = None
    z: tuple[float, ...] = ()  # atomic numbers, in element order
    # the HAADF's unit: None when it is in specimen units already (simulated), "auto" to fit
    # its scale to the chemical start (measured data, see tomosweep.solvers.fused)
    haadf_scale: float | str | None = None
    # per-worker results derived from this cell's data alone (the solvers' shared start)
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Param:
    """One parameter of a method: its type, its fixed default, and a default search range."""

    name: str
    kind: Literal["real", "int"]
    default: float
    low: float
    high: float
    prior: Literal["log", "linear"]
    doc: str
    searched: bool = True  # searched over [low, high] when the study's method table is empty


@dataclass(frozen=True)
class Method:
    """A reconstruction method a study can sweep: its adapter, its parameters, what it costs.

    A method is found by name in :data:`METHODS`: the built-ins below, those of installed
    distributions (entry-point group ``tomosweep.methods``) and those registered by a
    module the study names in ``[plugins] modules`` (see :mod:`tomosweep.plugins`).

    Parameters
    ----------
    name : str
        The name a study file uses (``[methods.<name>]``).
    params : tuple of Param
        Every parameter ``run`` reads, with its default and default search range.
    run : callable
        ``run(cell, params, device)`` — or ``run(cell, params, device, callback=None)`` when
        ``prunable`` — reconstructs one grid cell. ``cell`` is a :class:`CellData`;
        ``params`` maps each name of ``params`` to a number (integer parameters may arrive
        as floats: convert with ``int``); ``device`` is ``"cpu"``, ``"gpu"`` or ``"auto"``,
        to hand to the solvers.

        It must return a :class:`tomosweep.solvers.Result` whose ``volume`` holds **every
        element's map**: shape ``(n_elements, n_y, n_z, n_x)``, exactly the shape of
        ``cell.truth``, elements in the order of ``cell.elements``, as a NumPy or CuPy array
        of finite values. Units are the specimen's (the series in ``cell`` are divided by
        their dose already); the score z-normalises each element map (Schwartz 2024,
        Methods), so an overall scale per element does not change the NRMSE.

        To fail, raise: the exception's type and message become the trial's error (a
        :class:`tomosweep.TomosweepError` with a message that says what to change reads
        best). A failed trial is recorded and the study goes on. Any other return — a
        single element's volume, a bare array, non-finite values — is a failed trial
        whose error names the method and what was expected
        (:class:`MethodContractError`).
    doc : str
        One line for ``tomosweep methods``.
    prunable : bool
        ``run`` takes ``callback`` and calls ``callback(iteration, costs, volume)`` with the
        whole ``(n_elements, …)`` iterate, stopping when it returns True (median pruning).
    memory_volumes : float
        Peak working set in element volumes (n³ × n_elements values), for the memory check.

    Examples
    --------
    See ``tests/plugin_dist`` and ``docs/howto/add-method.md``: a distribution declares
    ``[project.entry-points."tomosweep.methods"] raw_sirt = "pkg.module:METHOD"``.
    """

    name: str
    params: tuple[Param, ...]
    run: Callable[..., Result]  # run(cell, params, device, callback=None)
    doc: str
    # its solver reports the whole iterate to a callback, so a trial can be scored and
    # pruned mid-run (SIRT runs one solver per element, HEBT iterates a stacked system)
    prunable: bool = False
    # peak working set in element volumes (n³ × n_elements values), measured with tracemalloc
    # at n = 32 … 64 and rounded up (tomosweep.sweep.memory)
    memory_volumes: float = 24.0

    def param(self, name: str) -> Param:
        """The parameter called ``name`` (``KeyError`` if the method has none)."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def param_names(self) -> tuple[str, ...]:
        """The names of :attr:`params`, in order."""
        return tuple(p.name for p in self.params)


class MethodContractError(TomosweepError, TypeError):
    """A method's ``run`` returned something other than what :class:`Method` documents."""


class UnknownMethodError(TomosweepError, LookupError):
    """A study names a method this process does not know (its plugin is not installed or not imported)."""


def lookup(name: str) -> Method:
    """The method called ``name``; :class:`UnknownMethodError` says where a plugin method must be found."""
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown method {name!r}{METHODS.unknown(name)}; this process knows {', '.join(METHODS)}. "
            "A method of one's own must be installed where every worker runs (entry-point group "
            "tomosweep.methods) or named in the study's [plugins] modules"
        ) from None


def check_result(method: str, result: Any, cell: CellData) -> Result:
    """Check what ``run`` returned against the :class:`Method` contract; return it unchanged.

    The expected shape is the truth's, or ``(n_elements, n_det, n_det, n_x)`` for
    measured data (no truth). Raises :class:`MethodContractError` naming the method.
    """
    elements = len(cell.elements)
    expected = (
        tuple(cell.truth.shape)
        if cell.truth is not None
        else (elements, *cell.chem.shape[-2:-1] * 2, cell.chem.shape[-1])
    )
    head = f"method {method!r} broke the Method contract: its run"
    want = (
        f"a tomosweep.solvers.Result whose volume has every element's map, shape {expected} "
        f"(n_elements={elements}: {', '.join(cell.elements)}; see help(tomosweep.sweep.methods.Method))"
    )
    if not isinstance(result, Result):
        raise MethodContractError(f"{head} returned a {type(result).__name__}; it must return {want}")
    shape = tuple(getattr(result.volume, "shape", ()))
    if shape != expected:
        hint = " — one element's volume only?" if shape == expected[1:] else ""
        raise MethodContractError(f"{head} returned a volume of shape {shape}{hint}; it must return {want}")
    return result


def cell_start(cell: CellData, device: str) -> FusedStart:
    """The chemical-only start and balance point of a cell, computed once per worker and device."""
    key = f"fused_start/{device}"
    if key not in cell.derived:
        cell.derived[key] = fused_start(
            cell.haadf_projector,
            cell.haadf,
            cell.chem_projector,
            cell.chem,
            cell.elements,
            gamma=cell.gamma,
            eps=cell.eps,
            haadf_scale=cell.haadf_scale,
            device=device,
        )
    return cell.derived[key]


def _with_haadf(cell: CellData, method: str) -> tuple[Projector, np.ndarray]:
    """The cell's HAADF geometry and series, for a method that cannot do without them."""
    if cell.haadf_projector is None or cell.haadf is None:
        raise InputError(f"{method} needs a HAADF series, and this cell has none")
    return cell.haadf_projector, cell.haadf


def _fused(cell: CellData, p: Mapping[str, Any], device: str, callback: Callback | None = None) -> Result:
    haadf_projector, haadf = _with_haadf(cell, "fused")
    return fused(
        haadf_projector,
        haadf,
        cell.chem_projector,
        cell.chem,
        cell.elements,
        lambda_haadf=p["lambda_haadf"],
        lambda_chem=p["lambda_chem"],
        lambda_tv=p["lambda_tv"],
        n_iter=int(p["n_iter"]),
        gamma=cell.gamma,
        eps=cell.eps,
        start=cell_start(cell, device),
        device=device,
        callback=callback,
    )


def _background_subtracted(cell: CellData) -> np.ndarray:
    """Chemical series in specimen units less the known background, clipped at 0."""
    return np.maximum(cell.chem - cell.eps[:, None, None, None], 0.0)


def _hebt(cell: CellData, p: Mapping[str, Any], device: str) -> Result:
    # HEBT's regression I^H = Σ r_A I_A has no intercept (Yuan 2021 eq. 15): a chemical
    # background would be read as signal and drive the ratios to zero, so it goes first
    # (as Yuan's background-subtracted EDS maps, §3.1.1).
    haadf_projector, haadf = _with_haadf(cell, "hebt")
    chem = _background_subtracted(cell)
    kwargs: dict[str, Any] = {"alpha": p["alpha"], "n_iter": int(p["n_iter"]), "device": device}
    try:
        return hebt(
            haadf_projector,
            haadf,
            cell.chem_projector,
            chem,
            haadf_at_chem_tilts=cell.haadf_at_chem,
            **kwargs,
        )
    except InputError as exc:
        if "zero response ratio" not in str(exc) or not cell.z:
            raise
    # Elements that always occur together (O in both oxides of the nanocubes) leave the
    # regression unable to tell their ratios apart at low chemical SNR. The HAADF model
    # itself (Schwartz 2024 eq. 1, Σ (Z_A x_A)^γ, linearised at x = 1 in specimen units)
    # then gives the ratios: r_A = Z_A^γ.
    ratios = np.asarray(cell.z, dtype=float) ** cell.gamma
    result = hebt(haadf_projector, haadf, cell.chem_projector, chem, response_ratios=ratios, **kwargs)
    return replace(result, info={**result.info, "response_ratios_source": "Z^gamma (the regression gave a zero ratio)"})


def _sirt(cell: CellData, p: Mapping[str, Any], device: str) -> Result:
    result = sirt_per_element(cell.chem_projector, _background_subtracted(cell), n_iter=int(p["n_iter"]), device=device)
    return replace(result, info={**result.info, "input": "background-subtracted chemical maps, one SIRT per element"})


def _poisson_ml(cell: CellData, p: Mapping[str, Any], device: str, callback: Callback | None = None) -> Result:
    return poisson_ml(
        cell.chem_projector, cell.chem, n_iter=int(p["n_iter"]), eps=cell.eps, device=device, callback=callback
    )


def _poisson_ml_tv(cell: CellData, p: Mapping[str, Any], device: str, callback: Callback | None = None) -> Result:
    return poisson_ml_tv(
        cell.chem_projector,
        cell.chem,
        lambda_tv=p["lambda_tv"],
        n_iter=int(p["n_iter"]),
        eps=cell.eps,
        start=cell_start(cell, device),
        device=device,
        callback=callback,
    )


# fused and Poisson-ML+TV share the solver, so they share its iteration cap
_FISTA_ITERATIONS = Param(
    "n_iter", "int", 150, 20, 400, "log", "most FISTA iterations (a run stops earlier once converged)", searched=False
)

#: every method by name: the built-ins, installed plugins (``tomosweep.methods``) and registered ones
METHODS: Registry[Method] = Registry("tomosweep.methods", Method, name_of=lambda m: m.name)
for _builtin in (
    Method(
        "fused",
        (
            Param(
                "lambda_haadf",
                "real",
                0.5,
                0.01,
                100.0,
                "log",
                "λ1 of eq. 1 relative to the data's balance point (1: HAADF and chemistry pull equally)",
            ),
            Param(
                "lambda_chem",
                "real",
                1.0,
                0.1,
                10.0,
                "log",
                "λ2, weight of the Poisson chemical term (only ratios matter: held at 1)",
                searched=False,
            ),
            Param("lambda_tv", "real", 1.0, 0.05, 20.0, "log", "λ3, weight of the channel-wise TV"),
            _FISTA_ITERATIONS,
        ),
        _fused,
        "fused multi-modal tomography (Schwartz 2024 eq. 1)",
        prunable=True,
    ),
    Method(
        "hebt",
        (
            Param("alpha", "real", 0.8, 0.05, 0.99, "linear", "α, HAADF weight (Yuan 2021 eq. 16)"),
            Param("n_iter", "int", 200, 20, 500, "log", "SIRT iterations"),
        ),
        _hebt,
        "HAADF-EDS bimodal tomography (Yuan 2021 eq. 15-17)",
        memory_volumes=10.0,
    ),
    Method(
        "sirt",
        (Param("n_iter", "int", 20, 2, 200, "log", "SIRT iterations per element map"),),
        _sirt,
        "conventional chemical-only SIRT per element (Yuan 2021 eq. 11)",
        memory_volumes=4.0,
    ),
    Method(
        "poisson_ml",
        (Param("n_iter", "int", 20, 2, 200, "log", "ML-EM iterations"),),
        _poisson_ml,
        "chemical-only Poisson maximum likelihood (ML-EM)",
        prunable=True,
        memory_volumes=5.0,
    ),
    Method(
        "poisson_ml_tv",
        (
            Param("lambda_tv", "real", 1.0, 0.05, 20.0, "log", "TV weight"),
            _FISTA_ITERATIONS,
        ),
        _poisson_ml_tv,
        "chemical-only Poisson likelihood + TV (Schwartz 2024 eq. 1 with λ1 = 0)",
        prunable=True,
    ),
):
    METHODS.register(_builtin)
METHODS.seal_builtins()  # a plugin's method cannot take one of these names (the store records each one's origin)


def register(method: Method) -> Method:
    """Add a reconstruction method: a study file can then name it (see ``docs/howto/add-method.md``).

    Returns ``method``, so a module can write ``METHOD = register(Method(...))``; a name
    that is taken is a ``ValueError``, a built-in's (``fused``, ``sirt``…) above all.
    """
    return METHODS.register(method)


def method_sources(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Where each named method comes from, and its parameters' kinds: what a store records at creation.

    Each is :meth:`~tomosweep.plugins.Registry.origin` (built in; an entry point's distribution
    and version; a ``[plugins]`` module's path and SHA-256; or the running program) with
    ``param_kinds`` (parameter → ``"int"`` or ``"real"``), which a command that only reads the
    store uses instead of the plugin's code.

    Parameters
    ----------
    names : iterable of str
        Registered method names.

    Returns
    -------
    dict of str to dict
        Method name → its origin, as JSON values.
    """
    return {
        name: {**METHODS.origin(name), "param_kinds": {p.name: p.kind for p in METHODS[name].params}} for name in names
    }
