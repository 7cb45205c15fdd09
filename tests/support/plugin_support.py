"""Install ``tests/plugin_dist`` into a folder, as an installer unpacks a wheel: module + ``.dist-info``.

pip cannot build the distribution here without network or the ``wheel`` package (setuptools
before 70.1 needs it), so the tests install it the way an installer lays a wheel out
(the binary distribution format: the modules, and a ``<name>-<version>.dist-info`` folder
with ``METADATA``, ``entry_points.txt`` and ``RECORD``), taking everything from the
distribution's own ``pyproject.toml``. Put the folder on ``PYTHONPATH`` and
``importlib.metadata`` finds the distribution and its entry points, in the driver and in
every worker process that inherits the environment.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import pytest

from tomosweep.results import SweepStore
from tomosweep.sweep.methods import METHODS
from tomosweep.sweep.spec import study_from_dict
from tomosweep.sweep.trial import build_cell_data, score

SOURCE = Path(__file__).parents[1] / "plugin_dist"

# a module a study names in [plugins] modules: one method that keeps the contract, and the
# README's former example, which returns only the first element's volume
PLUGIN_MODULE = """
from tomosweep.solvers import sirt, sirt_per_element
from tomosweep.sweep.methods import Method, Param, register


def sirt_half(cell, params, device):
    return sirt_per_element(cell.chem_projector, cell.chem, n_iter=int(params["n_iter"]), relaxation=0.5, device=device)


def first_element_sirt(cell, params, device):
    return sirt(cell.chem_projector, cell.chem[0], n_iter=int(params["n_iter"]), device=device)


N_ITER = (Param("n_iter", "int", 10, 2, 50, "log", "SIRT iterations"),)
register(Method("sirt_half", N_ITER, sirt_half, "per-element SIRT, relaxation 0.5"))
register(Method("first_element_sirt", N_ITER, first_element_sirt, "SIRT of the first element only"))
"""

CONTRACT_MESSAGE = (
    "MethodContractError: method 'first_element_sirt' broke the Method contract: its run returned a volume of "
    "shape (16, 16, 16) — one element's volume only?; it must return a tomosweep.solvers.Result whose volume "
    "has every element's map, shape (4, 16, 16, 16) (n_elements=4: Co, Cu, O, Au; "
    "see help(tomosweep.sweep.methods.Method))"
)


def install(target: Path, source: Path = SOURCE) -> Path:
    """Install the distribution in ``source`` into ``target``; return ``target``."""
    project = tomllib.loads((source / "pyproject.toml").read_text())
    meta, tool = project["project"], project["tool"]["setuptools"]
    target.mkdir(parents=True, exist_ok=True)
    files = []
    for module in tool["py-modules"]:
        shutil.copy(source / f"{module}.py", target / f"{module}.py")
        files.append(f"{module}.py")
    name = meta["name"].replace("-", "_")
    info = target / f"{name}-{meta['version']}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\nSummary: {meta['description']}\n"
    )
    groups = meta.get("entry-points", {})
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items()) + "\n"
            for group, points in groups.items()
        )
    )
    (info / "INSTALLER").write_text("tomosweep-tests\n")
    files += [f"{info.name}/{f}" for f in ("METADATA", "entry_points.txt", "INSTALLER", "RECORD")]
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    return target


def plugin_module(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my_plugin_module.py").write_text(PLUGIN_MODULE)
    return folder


STUDY_TOML = """
name = "plugins"
seed = 4
[plugins]
modules = ["my_plugin_module"]
[phantom]
name = "nanocubes"
size = 16
[acquisition]
n_haadf = [5]
n_chem = [3]
[methods.raw_sirt]
n_iter = { low = 2, high = 30, prior = "log" }
[methods.sirt_half]
n_iter = { low = 2, high = 30, prior = "log" }
[methods.first_element_sirt]
n_iter = { low = 2, high = 30, prior = "log" }
[budget]
trials_per_cell = 3
initial_points = 2
[cluster]
backend = "local"
n_workers = 2
"""


def plugin_environment(tmp_path: Path) -> dict[str, str]:
    """The environment of a user who installed the distribution and has a module of their own on the path."""
    site = install(tmp_path / "site")
    mods = plugin_module(tmp_path / "mods")
    path = os.pathsep.join([str(site), str(mods), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}


def expected_nrmse(study, record) -> float:
    """The record's NRMSE recomputed here, from the same study, cell and weights (docs/architecture.md: determinism)."""
    cell = build_cell_data(study, record.n_haadf, record.n_chem)
    params = {**study.fixed(record.method), **record.params}
    return float(score(cell, METHODS[record.method].run(cell, params, "cpu").volume).mean())


def check_plugin_store(path: Path, tmp_path: Path, monkeypatch) -> list:
    """Every trial of the two good methods is a real score; every first_element_sirt trial the contract's message."""
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    with SweepStore.open(path) as store:
        records = store.records()
    if "raw_sirt" not in METHODS:  # this process read its entry points before the install
        import tomosweep_plugin_example  # (registers raw_sirt on its first import)

        if "raw_sirt" not in METHODS:  # imported by an earlier test, whose registration was since forgotten
            METHODS.register(tomosweep_plugin_example.METHOD)
    study = study_from_dict(_stored_spec(path))
    good = [r for r in records if r.method in ("raw_sirt", "sirt_half")]
    assert len(good) == 6 and all(r.ok for r in good), [r.error for r in good]
    for record in good:
        assert record.worker != "driver"
        assert 0.05 < record.nrmse < 1.5
        assert record.nrmse == pytest.approx(expected_nrmse(study, record), rel=1e-9)
    bad = [r for r in records if r.method == "first_element_sirt"]
    assert len(bad) == 3 and {r.error for r in bad} == {CONTRACT_MESSAGE}
    return records


def _stored_spec(path: Path) -> dict:
    with SweepStore.open(path) as store:
        return dict(store.spec)
