"""Weights given by hand (a data file's ``[weights]``), checked like a study's fixed parameters.

A study file's fixed values are validated by :class:`tomosweep.sweep.spec.Study`; a data
file's ``[weights]`` table goes straight to a solver, so it gets the same checks here: a
number (not text, not a boolean), finite and > 0, an integer for an integer parameter
(``n_iter = 2.5`` is refused, not rounded), and within the method's sensible limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tomosweep.errors import InputError
from tomosweep.sweep.methods import METHODS
from tomosweep.sweep.spec import _param_limit


def checked_weights(method: str, table: Mapping[str, Any], *, where: str = "[weights]") -> dict[str, float]:
    """``table``'s values for ``method``, every one checked; the method's defaults fill the rest."""
    m = METHODS[method]
    unknown = sorted(set(table) - set(m.param_names))
    if unknown:
        raise InputError(f"{where}: {method} has no parameter {unknown}; allowed: {', '.join(m.param_names)}")
    params = {}
    for p in m.params:
        value = table.get(p.name, p.default)
        key = f"{where} {p.name}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{key} must be a number, not {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"{key} must be a finite number > 0 (got {value})")
        if p.kind == "int" and float(value) != int(value):
            raise InputError(f"{key} is a whole number of iterations (got {value})")
        if value > _param_limit(p):
            raise InputError(f"{key} = {value:g} is beyond {_param_limit(p):g}")
        params[p.name] = float(value)
    return params
