"""Study files: TOML, validated with pydantic, every mistake reported as one clear message.

A study names a phantom, an acquisition grid (HAADF tilt counts × chemical tilt
counts), one or more methods with the parameters to search, a budget and a cluster.
See ``examples/quickstart.toml`` for a commented example; :func:`load_study` reads one,
:func:`study_from_dict` validates an already-parsed mapping.

Parameters. In ``[methods.<name>]`` each parameter is either a number (held fixed) or
a table ``{low = …, high = …, prior = "log" | "linear"}`` (searched). Parameters left
out are held at the method's default; a method table left empty (``[methods.fused]``)
searches the method's default ranges. ``tomosweep methods`` lists them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tomosweep.cluster.backends import BACKENDS as BACKEND_REGISTRY
from tomosweep.cluster.settings import ClusterSettings
from tomosweep.errors import SpecError, TomosweepError
from tomosweep.phantoms import SPECIMENS, load_specimen
from tomosweep.phantoms.specimens import specimen_options
from tomosweep.plugins import READ_ONLY, PluginsSpec, reading_only
from tomosweep.sweep.methods import METHODS

# allow_inf_nan=False: inf and nan pass float parsing but fail every trial later
# use_attribute_docstrings: the docstring under a field is its description, which the
# documentation's study-file reference shows (docs/_ext/tomosweep_reference.py)
_FORBID = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True)
_MAX_TILTS = 1000  # per series; the paper's largest is 141


class SearchRange(BaseModel):
    """A searched parameter: bounds and prior (``log`` = log-uniform)."""

    model_config = _FORBID
    low: float
    """Lower bound of the searched range."""
    high: float
    """Upper bound of the searched range (larger than ``low``)."""
    prior: Literal["log", "linear"] = "linear"
    """``"log"``: uniform in the logarithm (needs ``low > 0``), for weights spanning decades; ``"linear"``: uniform."""

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be smaller than high ({self.high})")
        if self.prior == "log" and self.low <= 0:
            raise ValueError(f"a log prior needs low > 0 (got {self.low})")
        return self


ParamValue = float | SearchRange


class PhantomSpec(BaseModel):
    """The ground truth: a built-in specimen (``name``) or a user's file (``file``).

    ``size`` is a built-in specimen's edge in voxels (an ``n × n × n`` volume). A file's
    specimen has the size of its volumes ``(n_elements, n, n, n_x)``; a study file may
    repeat it as ``size = n`` but :func:`load_study` refuses any other value, which the
    run could not honour.
    """

    model_config = _FORBID
    name: str | None = None
    """A built-in specimen, by name (:data:`tomosweep.phantoms.SPECIMENS`); give this or ``file``."""
    file: str | None = None
    """Your own ground truth: ``.npz``, ``.h5``, ``.zarr`` or ``.hspy`` with ``volumes`` and ``elements``
    (:func:`tomosweep.phantoms.load_specimen`); its SHA-256 is recorded and checked on resume."""
    size: int = Field(default=48, ge=16, le=1024)
    """Edge of a built-in specimen in voxels (an n × n × n volume); beside a ``file`` it must equal the file's."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options of the built-in specimen's generator (refused for a file, and named when unknown)."""

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> PhantomSpec:
        if (self.name is None) == (self.file is None):
            raise ValueError("give exactly one of name = <built-in specimen> or file = <path to .npz/.h5/.zarr>")
        if self.name is not None and self.name not in SPECIMENS and reading_only(info):
            return self  # a plugin's specimen, read as stored: its module is not imported to check it
        if self.name is not None and self.name not in SPECIMENS:
            raise ValueError(f"unknown specimen {self.name!r}; built-in specimens: {', '.join(sorted(SPECIMENS))}")
        if self.file is not None and self.options:
            raise ValueError("options apply to built-in specimens only, not to a file")
        if self.name is not None:
            allowed = specimen_options(self.name)
            unknown = sorted(set(self.options) - set(allowed))
            if unknown:
                raise ValueError(
                    f"specimen {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                    f"its options: {', '.join(allowed)}"
                )
        return self


class AcquisitionSpec(BaseModel):
    """Simulated acquisition; ``n_haadf`` × ``n_chem`` is the study's grid."""

    model_config = _FORBID
    n_haadf: list[int] = Field(min_length=1)
    """HAADF tilt counts: one axis of the map, each a cell row (distinct, 1–1000)."""
    n_chem: list[int] = Field(min_length=1)
    """Chemical (EDS/EELS map) tilt counts: the other axis of the map (distinct, 1–1000)."""
    tilt_range: tuple[float, float] = (-70.0, 70.0)
    """First and last tilt in degrees, ``[low, high]`` with −90 ≤ low < high ≤ 90; tilts are spread evenly."""
    haadf_snr: float = Field(default=2000.0, gt=0, le=1e7)
    """HAADF signal-to-noise ratio: mean noise-free signal over the RMS of the Poisson noise."""
    chem_snr: float | dict[str, float] = 2.5
    """Chemical SNR: one number, or a table ``{ Co = 1.9, Cu = 2.9, … }`` naming exactly the specimen's elements."""
    background: float = Field(default=0.15, ge=0, lt=10)
    """Flat chemical background added before the noise, as a fraction of each map's maximum (Schwartz 2024 Methods)."""
    gamma: float = Field(default=1.7, ge=1, le=3)
    """HAADF contrast exponent γ of Z^γ: 1 (mass-thickness) to 3."""

    @field_validator("n_haadf", "n_chem")
    @classmethod
    def _tilt_counts(cls, values: list[int]) -> list[int]:
        # 0 only in a tune's one cell (a series without HAADF or without chemistry); a study's
        # grid needs tilts of both kinds (Study._grid_of_a_study)
        if any(v < 0 or v > _MAX_TILTS for v in values):
            raise ValueError(f"tilt counts must lie in 1–{_MAX_TILTS} (got {values})")
        if len(set(values)) != len(values):
            raise ValueError(f"tilt counts must be distinct (got {values})")
        return sorted(values)

    @field_validator("tilt_range")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not -90 <= low < high <= 90:
            raise ValueError(f"tilt_range must be [low, high] with -90 ≤ low < high ≤ 90 degrees (got {list(value)})")
        return value

    @field_validator("chem_snr")
    @classmethod
    def _chem_snr(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        values = value.values() if isinstance(value, dict) else [value]
        if any(not 0 < v <= 1e4 for v in values):
            raise ValueError("chemical SNR must lie in (0, 1e4] (a number, or a table element = SNR)")
        return value


class BudgetSpec(BaseModel):
    """Trials per (cell, method) and how they are chosen.

    The first ``initial_points`` come from the best points of the neighbouring cells
    (``warm_start``, when they have any) and a Latin-hypercube design; the rest from
    GP-Hedge (``sampler = "gp"``) or random draws (``"random"``, the baseline). ``liar``
    is the constant lie told for trials in flight.

    ``surrogate = "cell"``: one GP per (method, cell); ``"map"``: one GP per method over
    (weights, log n_haadf, log n_chem) fitted on every cell's trials, asked at each
    cell's tilt counts (:mod:`tomosweep.search.map`).

    A resolution ladder: ``ladder = [16, 24]`` searches the same map at those sizes of the
    specimen first (``ladder_trials`` per cell each, default 2: measured better than 4),
    each rung starting from the best points of the one below and the study's own size
    from the top rung (:mod:`tomosweep.sweep.ladder`).

    No trial runs for ever: one still running after ``trial_timeout_s`` seconds (not set:
    :func:`default_trial_timeout`) becomes a failed trial and its worker is restarted. The
    limit decides nothing about a finished trial's result, so it may change on resume and
    is not part of the study's content hash.

    Budgets that follow improvement: ``trials_per_cell`` is each cell's cap; with
    ``stop_tolerance`` set, a cell stops once the expected improvement there stayed
    below that fraction of its best for ``stop_patience`` asks in a row; ``total`` caps
    the whole study (all methods and cells), so trials a stopped cell does not use go
    to the cells still improving.
    """

    model_config = _FORBID
    trials_per_cell: int = Field(ge=1, le=100000)
    """Trials per (method, cell): each cell's cap."""
    initial_points: int = Field(default=5, ge=1)
    """Points before the Gaussian process takes over: warm starts, then a Latin-hypercube design
    (at most ``trials_per_cell``)."""
    liar: Literal["cl_min", "cl_mean", "cl_max", "kb"] = "cl_min"
    """The lie told for trials in flight: the constant liar at the min, mean or max of the results so far, or
    ``"kb"`` (kriging believer: the GP's own prediction)."""
    sampler: Literal["gp", "random"] = "gp"
    """``"gp"``: GP-Hedge over EI, LCB and PI; ``"random"``: random search, the baseline to check the GP against."""
    warm_start: bool = True
    """Start each cell from the best points of its neighbours (per-cell surrogate) or of an earlier study or rung."""
    prune: bool = False
    """Stop hopeless trials by the median stopping rule (Golovin et al. 2017); off because it cost map quality when
    measured."""
    # "map" measures better (benchmarks/map_cost.py: every cell of a 4 × 4 grid within 5 %
    # of its reference after a median 104 trials; per-cell GPs had 2-7 of 16 cells there
    # after 192)
    surrogate: Literal["map", "cell"] = "map"
    """``"map"``: one GP per method over (weights, log tilt counts), shared by every cell; ``"cell"``: one GP per
    cell."""
    stop_tolerance: float | None = Field(default=None, gt=0, lt=1)
    """Stop a cell once the expected improvement stayed below this fraction of its best for ``stop_patience`` asks
    (off when not set)."""
    stop_patience: int = Field(default=3, ge=1)
    """Asks in a row below ``stop_tolerance`` before a cell stops."""
    total: int | None = Field(default=None, ge=1)
    """Cap on the whole study's trials (all methods and cells); a stopped cell's unused trials go to the others."""
    ladder: list[int] = Field(default_factory=list)
    """Specimen sizes to search the same map at first, smallest first (each ≥ 16): the resolution ladder."""
    ladder_trials: int | None = Field(default=None, ge=1, le=100000)
    """Trials per cell on each rung of the ladder (not set: 2, which measured better than 4)."""
    trial_timeout_s: float | None = Field(default=None, gt=0)
    """Seconds one trial may run before it is stopped, recorded as failed and its worker restarted
    (not set: :func:`tomosweep.sweep.spec.default_trial_timeout`, from the methods and the size)."""

    @field_validator("ladder")
    @classmethod
    def _ladder_ascending(cls, value: list[int]) -> list[int]:
        if any(size < 16 for size in value) or value != sorted(set(value)):
            raise ValueError(f"ladder must list specimen sizes ≥ 16, smallest first, each once (got {value})")
        return value

    def rung_trials(self) -> int:
        """Trials per cell on each rung of the ladder: ``ladder_trials``, else 2 (at most the cap).

        A small rung measured better (``benchmarks/map_cost.py --only ladder``: 2 trials per
        cell cost 0.60× / 1.44× of a direct map search on two specimens, 4 cost 1.63× and
        more): the map surrogate needs few trials per cell, and a rung's best points are
        only a start, since the best ``lambda_tv`` moves with size."""
        return self.ladder_trials or min(2, self.trials_per_cell)

    @model_validator(mode="after")
    def _initial_le_budget(self) -> BudgetSpec:
        if self.initial_points > self.trials_per_cell:
            raise ValueError(
                f"initial_points ({self.initial_points}) cannot exceed trials_per_cell ({self.trials_per_cell})"
            )
        return self


class TuneSpec(BaseModel):
    """A tune's measured series and its self-supervised loss (:mod:`tomosweep.sweep.tune`).

    ``file`` is the data file (resolved); ``splits`` the K Poisson-thinning splits a trial
    averages over; ``fraction`` the share p of each chemical count that goes to the part the
    reconstruction is fitted on (the rest, 1 − p, is held out); ``haadf_holdout`` the share of
    HAADF tilts held out; ``loss``: which held-out term is the searched value ("chem": the
    chemical maps' Poisson deviance, the default when the data have chemical maps; "haadf":
    the held-out HAADF tilts' error, the only one for a HAADF-only series).
    """

    model_config = _FORBID
    file: str
    """The data file, resolved (written by ``tomosweep tune``)."""
    splits: int = Field(default=2, ge=1, le=16)
    """Poisson-thinning splits K a trial averages its loss over, each with its own seed."""
    fraction: float = Field(default=0.5, ge=0.1, le=0.9)
    """Share p of each chemical count in the part the reconstruction is fitted on; the rest, 1 − p, is held out."""
    haadf_holdout: float = Field(default=0.1, gt=0, lt=0.5)
    """Share of the interior HAADF tilts held out of the fit and predicted."""
    loss: Literal["chem", "haadf"] | None = None
    """The held-out term the search minimises: ``"chem"`` (the maps' Poisson deviance; the default with chemical
    maps) or ``"haadf"`` (the held-out tilts' error; the only one for a HAADF-only series)."""
    elements: list[str] = Field(default_factory=list)
    """The data's elements, in the data file's order (filled by ``tomosweep tune``)."""
    sensitivity: Literal["search", "fixed"] = "fixed"
    """``"search"``: each element's counts per unit concentration relative to the first element's are searched
    like a weight (``sensitivity_<element>``), for data without k-factors; ``"fixed"``: as the data file gives
    them (equal where it gives none). ``tomosweep tune`` searches them when the data file gives none."""
    sensitivity_range: float = Field(default=30.0, gt=1, le=1e4)
    """A searched relative sensitivity lies within [1/range, range] (log prior)."""

    def sensitivity_ranges(self) -> dict[str, SearchRange]:
        """The searched relative sensitivities, ``sensitivity_<element>`` for every element but the first.

        Returns
        -------
        dict of str to SearchRange
            Empty unless ``sensitivity = "search"``.
        """
        if self.sensitivity != "search":
            return {}
        r = self.sensitivity_range
        return {f"{SENSITIVITY_PREFIX}{e}": SearchRange(low=1 / r, high=r, prior="log") for e in self.elements[1:]}


#: the name prefix of a tune's searched relative sensitivities (TuneSpec.sensitivity_ranges)
SENSITIVITY_PREFIX = "sensitivity_"


class Study(BaseModel):
    """A validated study. ``methods`` maps a method name to its resolved parameters.

    A study of a simulated specimen has a ``phantom``; a tune (``tomosweep tune``) has
    ``data`` instead: one cell, the measured series' own tilt counts, scored by a loss that
    needs no ground truth.
    """

    model_config = _FORBID
    name: str = "study"
    """The study's name, in its log and in the names of what it writes."""
    seed: int = Field(default=0, ge=0)
    """Seeds the phantom, each cell's noise (a seed derived from it and the cell) and the optimisers."""
    device: Literal["cpu", "gpu", "auto"] = "cpu"
    """Where trials reconstruct: ``"gpu"`` needs the ``gpu`` extra and a CUDA device; ``"auto"`` uses one if present."""
    phantom: PhantomSpec | None = None
    """The ground truth the study simulates and scores against (a study names this; a tune names ``data``)."""
    data: TuneSpec | None = None
    """A tune's measured series and loss, written by ``tomosweep tune``."""
    acquisition: AcquisitionSpec
    """The simulated acquisition and the grid of (HAADF tilts × chemical tilts)."""
    # before methods and cluster: importing the modules registers what those name
    plugins: PluginsSpec = Field(default_factory=PluginsSpec)
    """Modules to import before the rest is read: methods and cluster backends of your own."""
    methods: dict[str, dict[str, ParamValue]] = Field(min_length=1)
    """One table per method, ``[methods.<name>]``: a number holds a parameter, ``{ low, high, prior }`` searches it,
    an empty table searches the method's default ranges (``tomosweep methods`` lists them)."""
    budget: BudgetSpec
    """How many trials, and how they are chosen."""
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    """Where the trials run: this machine, its GPUs, a batch cluster or a running scheduler."""
    # a stored study read without importing its plugins (status, check, export): the kinds of its
    # plugin methods' parameters, as the store recorded them (method -> parameter -> kind)
    _read_only: bool = PrivateAttr(default=False)
    _stored_kinds: dict[str, dict[str, str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _phantom_or_data(self) -> Study:
        if (self.phantom is None) == (self.data is None):
            raise ValueError("a study names a [phantom] (a tune, made by `tomosweep tune`, names its data instead)")
        if self.data is not None:
            if self.budget.ladder:
                raise ValueError("budget.ladder needs a simulated specimen; a tune searches the measured series itself")
            if self.budget.prune:
                raise ValueError("budget.prune scores iterates against a ground truth, which a tune does not have")
            if len(self.cells) != 1:
                raise ValueError("a tune has one cell: the measured series' own tilt counts")
            if self.budget.surrogate != "cell":
                raise ValueError('budget.surrogate = "map" shares what the cells of a map learn; a tune has one cell')
        elif min(self.acquisition.n_haadf + self.acquisition.n_chem) < 1:
            raise ValueError(
                f"acquisition: tilt counts must lie in 1–{_MAX_TILTS} "
                f"(got n_haadf {self.acquisition.n_haadf}, n_chem {self.acquisition.n_chem})"
            )
        return self

    @property
    def specimen(self) -> PhantomSpec:
        """The simulated specimen of a study (a :class:`SpecError` for a tune, which has none)."""
        if self.phantom is None:
            raise SpecError(
                "this store holds a tune of measured data: it has no simulated specimen or ground truth "
                "(use tomosweep reconstruct-data DATA.toml --weights STORE for its weights)"
            )
        return self.phantom

    @property
    def is_tune(self) -> bool:
        """Whether this is a tune of measured data (``data``) rather than a study of a phantom."""
        return self.data is not None

    @model_validator(mode="after")
    def _ladder_below_the_size(self) -> Study:
        if self.budget.ladder and self.phantom is not None:
            if self.phantom.file is not None:
                raise ValueError(
                    "budget.ladder needs a built-in specimen (phantom.name): a file's specimen has one size"
                )
            if self.budget.ladder[-1] >= self.phantom.size:
                raise ValueError(
                    f"budget.ladder sizes must be below the study's phantom.size ({self.phantom.size}); "
                    f"got {self.budget.ladder}"
                )
        return self

    @model_validator(mode="after")
    def _gpu_cluster_runs_gpu_trials(self) -> Study:
        if self.cluster.uses_gpus and self.device == "cpu":
            raise ValueError(
                f'the {self.cluster.backend} cluster gives each trial a GPU, but device = "cpu"; '
                'set device = "gpu" (or "auto")'
            )
        return self

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, raw: Any, info: ValidationInfo) -> Any:
        if not isinstance(raw, Mapping):
            return raw
        out: dict[str, dict[str, Any]] = {}
        for name, params in raw.items():
            if reading_only(info):  # no plugin is imported: a plugin method is read as the store resolved it
                method = METHODS.builtin(name)
                if method is None:
                    out[name] = _stored_params(name, params)
                    continue
            elif name not in METHODS:
                raise ValueError(f"unknown method {name!r}{METHODS.unknown(name)}; allowed: {', '.join(METHODS)}")
            else:
                method = METHODS[name]
            params = params or {}
            if not isinstance(params, Mapping):
                raise ValueError(f"[methods.{name}] must be a table of parameters")
            unknown = sorted(set(params) - set(method.param_names))
            if unknown:
                raise ValueError(
                    f"method {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                    f"allowed: {', '.join(method.param_names)}"
                )
            resolved: dict[str, Any] = {}
            for p in method.params:
                if not params and p.searched:  # an empty table searches the method's default ranges
                    resolved[p.name] = SearchRange(low=p.low, high=p.high, prior=p.prior)
                    continue
                value = params.get(p.name, p.default)
                if isinstance(value, Mapping):
                    value = _search_range(name, p, value)
                elif isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(
                        f"methods.{name}.{p.name} must be a number (fixed) or "
                        f'{{low = …, high = …, prior = "log"|"linear"}} (searched), not {value!r}'
                    )
                elif p.kind == "int" and float(value) != int(value):
                    raise ValueError(f"methods.{name}.{p.name} is an integer parameter (got {value})")
                elif not math.isfinite(value) or value <= 0:
                    raise ValueError(f"methods.{name}.{p.name} must be a finite number > 0 (got {value})")
                elif value > _param_limit(p):
                    raise ValueError(f"methods.{name}.{p.name} = {value:g} is beyond {_param_limit(p):g}")
                resolved[p.name] = value
            if not any(isinstance(v, SearchRange) for v in resolved.values()):
                first = method.params[0]
                raise ValueError(
                    f"method {name!r} searches nothing: give at least one parameter a range, e.g. "
                    f'{first.name} = {{low = {first.low:g}, high = {first.high:g}, prior = "{first.prior}"}}'
                )
            out[name] = resolved
        return out

    # ------------------------------------------------------------------ derived

    def searched(self, method: str) -> dict[str, SearchRange]:
        """The searched parameters of ``method``, in the method's order (a tune's searched sensitivities last)."""
        ranges = {k: v for k, v in self.methods[method].items() if isinstance(v, SearchRange)}
        return {**ranges, **(self.data.sensitivity_ranges() if self.data is not None else {})}

    def fixed(self, method: str) -> dict[str, float]:
        """The parameters of ``method`` that the study fixes rather than searches.

        Parameters
        ----------
        method : str
            A method of the study.

        Returns
        -------
        dict of str to float
            Name → value.
        """
        return {k: v for k, v in self.methods[method].items() if not isinstance(v, SearchRange)}

    @property
    def param_names(self) -> tuple[str, ...]:
        """Every parameter of every method, first-seen order: the store's ``params`` columns."""
        names: list[str] = []
        for params in self.methods.values():  # resolved in each method's own parameter order
            names.extend(n for n in params if n not in names)
        if self.data is not None:
            names.extend(self.data.sensitivity_ranges())
        return tuple(names)

    @property
    def read_only(self) -> bool:
        """Whether this is a stored study read without importing its plugins (see :func:`study_from_dict`)."""
        return self._read_only

    def param_kind(self, method: str, name: str) -> str:
        """The kind (``"int"`` or ``"real"``) of ``method``'s parameter ``name``.

        A study read without its plugins takes a plugin method's kinds from what its store
        recorded; where the store recorded none, the method's code would be needed, which a
        command that only reads a store does not import (:class:`PluginCodeNeeded`).

        Parameters
        ----------
        method : str
            A method of the study.
        name : str
            One of its parameters.

        Returns
        -------
        str
            ``"int"`` or ``"real"``.
        """
        if self.data is not None and name in self.data.sensitivity_ranges():
            return "real"
        stored = self._stored_kinds.get(method, {})
        if name in stored:
            return stored[name]
        if not self._read_only:
            return METHODS[method].param(name).kind
        builtin = METHODS.builtin(method)
        if builtin is not None:
            return builtin.param(name).kind
        where = ", ".join(self.plugins.modules) or "an installed distribution"
        raise PluginCodeNeeded(
            f"method {method!r} comes from a plugin ({where}) and this store does not record whether its parameter "
            f"{name!r} is an integer (it was made before stores recorded their methods); a command that only reads a "
            "store never imports a plugin's code: `tomosweep resume` imports it, and needs it installed"
        )

    @property
    def cells(self) -> list[tuple[int, int]]:
        """Every ``(n_haadf, n_chem)`` of the grid, HAADF-major."""
        return [(h, c) for h in self.acquisition.n_haadf for c in self.acquisition.n_chem]

    def to_json(self) -> dict[str, Any]:
        """The study as JSON values (what the store keeps in its ``spec`` attribute).

        The one of ``phantom`` and ``data`` that is not given is left out, so a study's JSON
        (and its content hash) is what it was before tunes existed."""
        body = self.model_dump(mode="json")
        for key in ("phantom", "data"):
            if body.get(key) is None:
                body.pop(key, None)
        if body["budget"].get("trial_timeout_s") is None:  # as before the limit existed
            body["budget"].pop("trial_timeout_s", None)
        return body

    def content_hash(self) -> str:
        """Hash of everything that determines the trials' results and budget (not the cluster, nor
        the trial time limit: both say how trials run, and may change on resume)."""
        body = {k: v for k, v in self.to_json().items() if k != "cluster"}
        body["budget"] = {k: v for k, v in body["budget"].items() if k != "trial_timeout_s"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


#: seconds the slowest measured trial took: fused at 64³, 150 iterations, on one CPU core
#: (README, "a paper-scale map's price": 34–71 s per trial)
_REFERENCE_TRIAL_S = 71.0
_TIMEOUT_MARGIN = 20.0  # a trial this many times slower than expected is hung, not slow
_TIMEOUT_FLOOR_S = 600.0  # projector matrices built on a cold worker, a loaded node


def default_trial_timeout(study: Study, *, n: int | None = None) -> float:
    """Seconds a trial of ``study`` may run when ``[budget] trial_timeout_s`` is not set.

    A trial's time grows as n³ with the specimen's edge n (measured about 8× per doubling)
    and in proportion to its iterations. The slowest trial measured, fused at 64³ with
    150 iterations, took 71 s on one CPU core; the limit is ``_TIMEOUT_MARGIN`` (20) times
    that, scaled to the study's size and to the most iterations any of its methods may
    take relative to that method's default, and never under 10 minutes:
    ``max(600, 20 × 71 × (n / 64)³ × max_m(iterations_m / default_m))`` seconds
    (24 min at 64³, 3.2 h at 128³ for default iterations). ``n``: the volume's edge where
    the study does not say it (a tune's series width; not given: 256, so the limit errs
    long). Any method counts as fused, the costliest built-in one, so the limit only ever
    errs long.
    """
    if n is not None:
        pass
    elif study.phantom is not None:
        n = study.phantom.size
        if study.phantom.file is not None:
            try:
                n = int(load_specimen(study.phantom.file).volumes.shape[1])
            except TomosweepError:
                pass  # the run reports the file; the size written beside it stands in
    else:
        n = _TUNE_WIDTH
    scale = 1.0
    for name, params in study.methods.items():
        method = METHODS.get(name)
        iterations = params.get("n_iter") if method is not None else None
        default = next((p.default for p in method.params if p.name == "n_iter"), None) if method else None
        if iterations is None or not default:
            continue
        most = iterations.high if isinstance(iterations, SearchRange) else float(iterations)
        scale = max(scale, most / default)
    return max(_TIMEOUT_FLOOR_S, _TIMEOUT_MARGIN * _REFERENCE_TRIAL_S * (n / 64) ** 3 * scale)


_TUNE_WIDTH = 256  # a tune's series is not read here: assume a large one, so the limit errs long


def trial_timeout(study: Study, *, n: int | None = None) -> float:
    """Seconds a trial of ``study`` may run: ``[budget] trial_timeout_s``, else :func:`default_trial_timeout`."""
    return study.budget.trial_timeout_s or default_trial_timeout(study, n=n)


class PluginCodeNeeded(SpecError):
    """A command that only reads a store needed a plugin method's code, which it never imports."""


def _stored_params(method: str, raw: Any) -> dict[str, ParamValue]:
    """A plugin method's parameters as its store resolved them, read without the plugin: each a
    finite number (fixed) or a range, in the method's own order, at least one of them searched."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"[methods.{method}] must be a table of parameters")
    resolved: dict[str, ParamValue] = {}
    for name, value in raw.items():
        key = f"methods.{method}.{name}"
        if isinstance(value, Mapping):
            try:
                resolved[str(name)] = SearchRange(**value)
            except (ValidationError, TypeError) as exc:
                detail = _first_message(exc) if isinstance(exc, ValidationError) else str(exc)
                raise ValueError(f"{key}: {detail}") from None
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number or a range, not {value!r}")
        else:
            resolved[str(name)] = value
    if not any(isinstance(v, SearchRange) for v in resolved.values()):
        raise ValueError(f"method {method!r} searches nothing")
    return resolved


def _search_range(method: str, p: Any, raw: Mapping[str, Any]) -> SearchRange:
    key = f"methods.{method}.{p.name}"
    unknown = sorted(set(raw) - {"low", "high", "prior"})
    if unknown:
        raise ValueError(f"{key}: unknown key {', '.join(map(repr, unknown))}; a range has low, high, prior")
    try:
        rng = SearchRange(**{"prior": p.prior, **raw})
    except ValidationError as exc:
        raise ValueError(f"{key}: {_first_message(exc)}") from None
    if rng.low <= 0:
        raise ValueError(f"{key}: low must be > 0 (got {rng.low})")
    if p.kind == "int" and (rng.low != int(rng.low) or rng.high != int(rng.high)):
        raise ValueError(f"{key} is an integer parameter: low and high must be integers")
    if rng.high > _param_limit(p):
        raise ValueError(f"{key}: high = {rng.high:g} is beyond {_param_limit(p):g}")
    return rng


def _param_limit(p: Any) -> float:
    """The largest sensible value: 100 000 iterations; a weight of 1e6 (relative or fraction)."""
    if p.kind == "int":
        return 100_000.0
    return 1.0 if p.high <= 1.0 else 1e6


def _first_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {_clean(err['msg'])}" if loc else _clean(err["msg"])


_SECTIONS: dict[str, type[BaseModel]] = {
    "": Study,
    "phantom": PhantomSpec,
    "data": TuneSpec,
    "acquisition": AcquisitionSpec,
    "budget": BudgetSpec,
    "cluster": ClusterSettings,
    "plugins": PluginsSpec,
}


def _clean(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _describe(err: Mapping[str, Any]) -> str:
    loc = [str(x) for x in err["loc"]]
    key = ".".join(loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        section = ".".join(loc[:-1])
        model = _SECTIONS.get(section)
        allowed = f"; allowed: {', '.join(model.model_fields)}" if model else ""
        where = f"[{section}]" if section else "the top level"
        return f"unknown key {loc[-1]!r} in {where}{allowed}"
    if kind == "missing":
        return f"missing required key {key}"
    if kind == "literal_error":
        return f"{key}: {err['msg'].replace('Input should be', 'must be')} (got {err.get('input')!r})"
    text = f"{key}: {_clean(err['msg'])}"
    if "input" in err and kind not in ("value_error", "assertion_error"):  # our own messages quote the value
        text += f" (got {err['input']!r})"
    return text


def study_from_dict(
    raw: Mapping[str, Any],
    *,
    source: str = "study",
    read_only: bool = False,
    param_kinds: Mapping[str, Mapping[str, str]] | None = None,
) -> Study:
    """Validate a parsed study; raise :class:`SpecError` listing every mistake by key.

    ``read_only``: a stored study, for a command that only reads its store. Its ``[plugins]``
    modules are not imported and no installed plugin is loaded: a plugin's method is taken as
    the store resolved it, with the parameter kinds ``param_kinds`` the store recorded, and a
    ``[cluster]`` backend that is not built in is read as the default (nothing is run). The
    study says so (:attr:`Study.read_only`) and runs nothing.
    """
    raw = dict(raw)
    if read_only:
        cluster = raw.get("cluster")
        backend = cluster.get("backend", "local") if isinstance(cluster, Mapping) else None
        if isinstance(backend, str) and BACKEND_REGISTRY.builtin(backend) is None:
            raw.pop("cluster")  # a plugin's backend: its settings are not read without its code
    try:
        study = Study.model_validate(raw, context={READ_ONLY: True} if read_only else None)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            line = _describe(err)
            if line not in lines:
                lines.append(line)
        raise SpecError(f"{source}: invalid study file\n  - " + "\n  - ".join(lines)) from None
    if read_only:
        study._read_only = True
        study._stored_kinds = {m: dict(k) for m, k in (param_kinds or {}).items() if METHODS.builtin(m) is None}
    return study


def stored_study(store: Any, *, to_run: bool = False) -> Study:
    """The study stored in ``store``, validated as a study file is.

    Without ``to_run`` (a command that only reads the store: ``status``, ``check``,
    ``export``), none of its plugins is imported, so a received store's code never runs
    there: its plugin methods are read as stored, with the parameter kinds the store recorded
    (see :func:`~tomosweep.sweep.spec.study_from_dict`). ``to_run``: a command that runs its
    methods, which imports its ``[plugins] modules`` as ``run`` did.

    Parameters
    ----------
    store : SweepStore
        An open store.
    to_run : bool
        Import the study's plugins, for a command that runs its methods.

    Returns
    -------
    Study
        The validated study (:attr:`Study.read_only` without ``to_run``).
    """
    source = f"{store.path} (stored study)"
    if to_run:
        return study_from_dict(store.spec, source=source)
    kinds = {
        name: entry["param_kinds"]
        for name, entry in store.method_sources().items()
        if isinstance(entry, dict) and isinstance(entry.get("param_kinds"), dict)
    }
    return study_from_dict(store.spec, source=source, read_only=True, param_kinds=kinds)


def load_study(path: str | os.PathLike[str]) -> Study:
    """Read and validate a TOML study file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"study file {path} is not UTF-8 text (byte {exc.start}): TOML files are UTF-8; "
            "save it as UTF-8 or check that it is the study file"
        ) from None
    except FileNotFoundError:
        raise SpecError(f"study file {path} does not exist") from None
    except OSError as exc:
        raise SpecError(f"study file {path} cannot be read: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    study = study_from_dict(raw, source=str(path))
    if study.phantom is not None and study.phantom.file is not None:
        resolved = (path.parent / study.phantom.file).expanduser()
        phantom = study.phantom.model_copy(update={"file": str(resolved.resolve())})
        study = study.model_copy(update={"phantom": phantom})
        given = raw.get("phantom")
        if isinstance(given, Mapping) and "size" in given:
            _check_file_size(phantom, source=str(path))
    return study


def _check_file_size(phantom: PhantomSpec, *, source: str) -> None:
    """Refuse a ``size`` written beside ``file`` that is not the file's size.

    Only a study file is checked, where ``size`` is known to be the user's: a stored study
    holds the default size beside its file, which never meant anything.
    """
    assert phantom.file is not None  # checked only for a phantom given as a file
    try:
        shape = load_specimen(phantom.file).volumes.shape
    except TomosweepError:
        return  # the file's own problem is reported where the study reads it, as without a size
    n, n_x = int(shape[1]), int(shape[3])
    if phantom.size != n:
        raise SpecError(
            f"{source}: phantom.size = {phantom.size} but phantom.file {phantom.file} holds volumes of "
            f"{n} × {n} × {n_x} voxels (size {n}); a file phantom's size is its file's: remove size or set it to {n}"
        )


def check_extension(stored: Study, new: Study) -> list[str]:
    """What ``new`` changes relative to ``stored``, if it only extends it; raise otherwise.

    An extension may raise ``budget.trials_per_cell``, ``ladder_trials`` and ``total`` (or
    lift the total cap) and add tilt counts to either grid axis. Anything else (phantom,
    noise, methods, ranges, seed) would make the stored trials answer a different
    question, so it is refused.
    """
    a, b = stored.to_json(), new.to_json()
    changes = []
    for section in ("name", "seed", "device", "phantom", "data", "methods"):
        if a.get(section) != b.get(section):
            raise SpecError(f"the study's {section!r} differs from the stored one; only the budget and grid may change")
    acq_a = {k: v for k, v in a["acquisition"].items() if k not in ("n_haadf", "n_chem")}
    acq_b = {k: v for k, v in b["acquisition"].items() if k not in ("n_haadf", "n_chem")}
    if acq_a != acq_b:
        diff = sorted(k for k in acq_a if acq_a[k] != acq_b.get(k))
        raise SpecError(f"acquisition {', '.join(diff)} differ from the stored study; only the grid may change")
    for axis in ("n_haadf", "n_chem"):
        old, new_values = set(a["acquisition"][axis]), set(b["acquisition"][axis])
        if not old <= new_values:
            raise SpecError(f"acquisition.{axis} drops {sorted(old - new_values)}; a grid may only grow")
        if new_values != old:
            changes.append(f"{axis} + {sorted(new_values - old)}")
    budget_a, budget_b = a["budget"], b["budget"]
    growing = ("trials_per_cell", "ladder_trials", "total")
    free = ("trial_timeout_s",)  # how long a trial may run: no stored result depends on it
    fixed = sorted(
        k for k in budget_a.keys() | budget_b.keys() if k not in growing + free and budget_a.get(k) != budget_b.get(k)
    )
    if fixed:
        raise SpecError(
            f"budget.{', budget.'.join(fixed)} must stay as stored; "
            "only trials_per_cell, ladder_trials and total may grow"
        )
    rung_a, rung_b = BudgetSpec(**budget_a).rung_trials(), BudgetSpec(**budget_b).rung_trials()
    if rung_b < rung_a:
        raise SpecError(f"budget.ladder_trials may only grow (stored {rung_a}, new {rung_b})")
    if rung_b > rung_a:
        changes.append(f"ladder_trials {rung_a} → {rung_b}")
    if budget_b["trials_per_cell"] < budget_a["trials_per_cell"]:
        raise SpecError(
            f"budget.trials_per_cell may only grow (stored {budget_a['trials_per_cell']}, "
            f"new {budget_b['trials_per_cell']})"
        )
    if budget_b["trials_per_cell"] > budget_a["trials_per_cell"]:
        changes.append(f"trials_per_cell {budget_a['trials_per_cell']} → {budget_b['trials_per_cell']}")
    # no total is no cap: removing one raises it, setting one where there was none lowers it
    total_a, total_b = budget_a.get("total"), budget_b.get("total")
    if total_b is not None and (total_a is None or total_b < total_a):
        raise SpecError(
            f"budget.total may only grow (stored {total_a if total_a is not None else 'none, no cap'}, "
            f"new {total_b}); leave it out to lift the cap"
        )
    if total_a != total_b:
        changes.append(f"total {total_a} → {total_b if total_b is not None else 'no cap'}")
    return changes
