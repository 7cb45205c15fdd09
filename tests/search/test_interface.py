"""The one Search interface: every sibling asks, tells, says when it is done, and gives back and
takes its state the same way; none reaches into another's internals."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

import tomosweep.search
from tomosweep.search.base import EXHAUSTED, Search
from tomosweep.search.cell import CellGP, RandomSearch, cell_search
from tomosweep.search.map import MapCell, map_searches

SPACE = {"a": (0.01, 100.0, "log", "real"), "b": (0.05, 20.0, "log", "real")}
CELLS = [(10, 3), (10, 6), (20, 3), (20, 6)]


def bowl(p: dict, cell: tuple[int, int] = (10, 3)) -> float:
    return 0.2 + 0.3 / cell[1] + 0.05 * math.log10(p["a"] / 2) ** 2 + 0.05 * math.log10(p["b"] / 0.5) ** 2


def make(kind: str, seed: int = 3) -> dict[tuple[int, int], Search]:
    if kind == "map":
        return dict(map_searches("fused", CELLS, SPACE, seed=seed, n_initial=3))
    return {cell: cell_search(SPACE, sampler=kind, n_initial=3, seed=seed + k) for k, cell in enumerate(CELLS)}


def drive(searches: dict, start: int, n: int) -> list:
    out = []
    for k in range(start, start + n):
        cell = CELLS[k % len(CELLS)]
        proposal = searches[cell].ask(k)
        assert proposal is not None
        searches[cell].tell(proposal.params, bowl(proposal.params, cell), key=k)
        out.append((cell, proposal.params, proposal.by))
    return out


def states(searches: dict) -> dict:
    from tomosweep.search.map import map_states

    return json.loads(json.dumps({**map_states(searches), **{str(c): s.state() for c, s in searches.items()}}))


@pytest.mark.parametrize("kind", ["gp", "random", "map"])
def test_each_search_resumed_from_its_stored_state_proposes_what_one_never_stopped_does(kind):
    from tomosweep.search.map import restore_maps

    straight = make(kind)
    drive(straight, 0, 16)
    stored = states(straight)
    resumed = make(kind)
    for cell, search in straight.items():
        for x, y in zip(search.X, search.Y, strict=True):
            resumed[cell].tell(dict(zip(search.names, x, strict=True)), y)
    assert restore_maps(resumed, stored) == []
    for cell, search in resumed.items():
        search.restore(stored[str(cell)])
    assert drive(resumed, 16, 8) == drive(straight, 16, 8)


@pytest.mark.parametrize("kind", ["gp", "random", "map"])
def test_a_damaged_state_is_refused_whole_and_the_search_is_left_as_it_was(kind):
    searches = make(kind)
    drive(searches, 0, 8)
    search = searches[CELLS[0]]
    before = json.dumps(search.state())
    bad = {**search.state(), "n_asked": -2}
    with pytest.raises(ValueError, match="n_asked"):
        search.validate(bad)
    with pytest.raises(ValueError, match="n_asked"):
        search.restore(bad)
    with pytest.raises(ValueError, match="gains"):
        search.restore({**search.state(), "gains": [0.0, math.nan, 1.0]})
    with pytest.raises(TypeError, match="table"):
        search.restore([1, 2, 3])
    assert json.dumps(search.state()) == before


def test_the_siblings_share_the_interface_and_differ_in_proposing():
    kinds = {type(s) for k in ("gp", "random", "map") for s in make(k).values()}
    assert kinds == {CellGP, RandomSearch, MapCell}
    assert all(issubclass(k, Search) for k in kinds)
    assert {k.kind for k in kinds} == {"gp", "random", "map"}
    assert all("propose" in vars(k) for k in kinds)


@pytest.mark.parametrize("kind", ["gp", "random"])
def test_a_cell_says_it_is_done_when_its_finite_space_is_spent(kind):
    search = cell_search({"n": (1, 4, "linear", "int")}, sampler=kind, n_initial=2, seed=0)
    k = 0
    while (proposal := search.ask(k)) is not None:
        search.tell(proposal.params, abs(proposal.params["n"] - 3) / 10, key=k)
        k += 1
    assert k == 4 and search.done == EXHAUSTED
    assert search.best() == (0.0, {"n": 3})


def test_best_is_value_then_point_and_a_failure_is_told_the_penalty():
    search = cell_search(SPACE, n_initial=2, seed=1)
    assert search.best() is None
    search.tell({"a": 1.0, "b": 1.0}, 0.4)
    search.tell({"a": 2.0, "b": 0.5}, None)
    assert search.best() == (0.4, {"a": 1.0, "b": 1.0})
    assert search.told_values() == [0.4, 1.5]


def test_no_search_module_reaches_into_another_objects_private_members():
    """Private names are read only on ``self`` (and a class's own): the siblings and the map's GP
    talk through the public interface."""
    found = []
    for path in Path(tomosweep.search.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                    continue
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert found == []


def test_the_search_package_imports_nothing_of_the_project_but_the_errors():
    imported = set()
    for path in Path(tomosweep.search.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tomosweep"):
                imported.add(node.module)
    assert {m for m in imported if not m.startswith("tomosweep.search")} <= {"tomosweep.errors"}


def test_the_map_reads_its_cells_through_their_ledgers():
    searches = make("map")
    drive(searches, 0, 12)
    model = searches[CELLS[0]].model
    X, Y, own = model.training_set(CELLS[0], with_pending=False)
    assert len(X) == 12 and len(own) == 3
    assert np.allclose(np.sort(Y), np.sort(np.log([v for s in searches.values() for v in s.told_values()])))
