"""Every public name of the package has a numpydoc docstring.

Public: a function or class defined in a tomosweep module under a name without a leading
underscore, and the methods and properties such a class defines under such names. Each is
checked with ``numpydoc.validate`` for the codes in ``CHECKS``: a docstring and its summary,
and a numpydoc shape where there are sections (known sections in order, documented
parameters that exist). A dataclass or named tuple left without one would show Python's
generated ``Name(field, ...)`` line, which is not a docstring either.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator

import pytest

import tomosweep

numpydoc_validate = pytest.importorskip("numpydoc.validate", reason="numpydoc is in the test extra")

CHECKS = {
    "GL08": "no docstring",
    "SS01": "no summary",
    "GL06": "an unknown section",
    "GL07": "sections out of numpydoc's order",
    "PR02": "a documented parameter the signature does not have",
    "PR10": "a parameter without a space before its colon",
}


def _modules() -> list[str]:
    found = pkgutil.walk_packages(tomosweep.__path__, "tomosweep.")
    return ["tomosweep", *sorted(m.name for m in found if not m.name.rsplit(".", 1)[-1].startswith("_"))]


def _public(module_name: str) -> Iterator[tuple[str, object]]:
    module = importlib.import_module(module_name)
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) != module_name:
            continue  # imported from elsewhere: checked where it is defined
        yield f"{module_name}.{name}", obj
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, staticmethod | classmethod):
                    member = member.__func__
                elif isinstance(member, property):
                    member = member.fget
                if inspect.isfunction(member):
                    yield f"{module_name}.{name}.{attr}", member


def _problems(qualname: str, obj: object) -> list[str]:
    if inspect.isclass(obj) and re.fullmatch(rf"{obj.__name__}\(.*\)", (obj.__doc__ or "").strip(), re.S):
        return ["GL08 only the generated signature line, no docstring"]
    report = numpydoc_validate.validate(qualname)
    return [f"{code} {CHECKS[code]}" for code, _ in report["errors"] if code in CHECKS]


MODULES = _modules()


@pytest.mark.parametrize("module_name", MODULES)
def test_public_names_have_numpydoc_docstrings(module_name: str) -> None:
    module = importlib.import_module(module_name)
    problems = [] if module.__doc__ else [f"{module_name}: no module docstring"]
    for qualname, obj in _public(module_name):
        problems += [f"{qualname}: {p}" for p in _problems(qualname, obj)]
    assert not problems, "\n".join(problems)
