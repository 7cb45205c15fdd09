"""A method of one's own: found through an entry point or a study's [plugins] modules, on the
driver and on fresh worker processes, and held to the Method contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_support import (
    CONTRACT_MESSAGE,
    SOURCE,
    STUDY_TOML,
    check_plugin_store,
    install,
    plugin_environment,
    plugin_module,
)
from sweep_support import tiny_study

from tomosweep.errors import SpecError
from tomosweep.results import FAILED
from tomosweep.sweep.methods import METHODS, Method
from tomosweep.sweep.spec import study_from_dict
from tomosweep.sweep.trial import TrialTask, run_trial

HOWTO = Path(__file__).parents[2] / "docs" / "howto" / "add-method.md"
EXAMPLE = SOURCE / "tomosweep_plugin_example.py"


@pytest.fixture
def forget_plugins():
    """Leave the process's registry and modules as they were (the plugins register on import)."""
    before = set(METHODS)
    modules = set(sys.modules)
    yield
    for name in set(METHODS) - before:
        del METHODS[name]
    for name in set(sys.modules) - modules:
        if name.startswith(("tomosweep_plugin_example", "my_plugin_module")):
            del sys.modules[name]


def test_the_documented_example_is_the_distributions_module():
    """The how-to's method example is, character for character, the module the tests install."""
    howto = HOWTO.read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in howto
    assert '[project.entry-points."tomosweep.methods"]\nraw_sirt = "tomosweep_plugin_example:METHOD"' in howto
    assert "first_element_sirt" not in howto  # the example that failed every trial is gone


def test_an_installed_distribution_is_found_through_its_entry_point(tmp_path, monkeypatch, forget_plugins):
    from tomosweep.plugins import Registry

    site = install(tmp_path / "site")
    broken = site / "broken_plugin-1.0.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (broken / "entry_points.txt").write_text("[tomosweep.methods]\nbroken = no_such_module:METHOD\n")
    monkeypatch.syspath_prepend(str(site))
    fresh = Registry("tomosweep.methods", Method, name_of=lambda m: m.name)  # as a new process has it
    assert "raw_sirt" in fresh and fresh["raw_sirt"].param_names == ("n_iter",)
    assert "broken" not in fresh
    assert fresh.unknown("broken") == (
        " (a plugin of that name failed to load: entry point 'broken' = 'no_such_module:METHOD' of broken-plugin "
        "(tomosweep.methods): No module named 'no_such_module')"
    )
    assert fresh.unknown("raw_sirt") == ""


def test_a_wrong_return_is_one_failed_trial_naming_the_method(tmp_path, monkeypatch, forget_plugins):
    monkeypatch.syspath_prepend(str(plugin_module(tmp_path / "mods")))
    raw = tiny_study(plugins={"modules": ["my_plugin_module"]}, methods={"first_element_sirt": {}})
    study = study_from_dict(raw)
    record = run_trial(TrialTask(json.dumps(study.to_json()), "first_element_sirt", 5, 3, {"n_iter": 3}))
    assert record.status == FAILED
    assert record.error == CONTRACT_MESSAGE


def test_plugins_modules_are_imported_when_the_study_is_read(tmp_path, monkeypatch, forget_plugins):
    monkeypatch.syspath_prepend(str(plugin_module(tmp_path / "mods")))
    methods = {"sirt_half": {"n_iter": {"low": 2, "high": 20}}}
    with pytest.raises(SpecError, match=r"methods: unknown method 'sirt_half'; allowed: fused, "):
        study_from_dict(tiny_study(methods=methods))
    study = study_from_dict(tiny_study(plugins={"modules": ["my_plugin_module"]}, methods=methods))
    assert study.plugins.modules == ("my_plugin_module",) and "n_iter" in study.searched("sirt_half")
    with pytest.raises(SpecError) as info:
        study_from_dict(tiny_study(plugins={"modules": ["no_such_plugin"]}, methods=methods))
    assert (
        "plugins.modules: cannot import 'no_such_plugin' (ModuleNotFoundError: No module named 'no_such_plugin'); "
        "it must be importable here and on every worker (installed, or on PYTHONPATH)"
    ) in str(info.value)


@pytest.mark.slow
def test_tomosweep_run_finds_plugin_methods_on_fresh_worker_processes(tmp_path, monkeypatch, forget_plugins):
    """`tomosweep run` on a local cluster of new worker processes: nothing imports the plugins but the study."""
    env = plugin_environment(tmp_path)
    (tmp_path / "study.toml").write_text(STUDY_TOML)
    cli = [sys.executable, "-m", "tomosweep.cli"]
    listed = subprocess.run([*cli, "methods"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "raw_sirt" in listed.stdout  # the entry point, with no study at all
    done = subprocess.run(
        [*cli, "run", "study.toml", "--store", "s.zarr", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    check_plugin_store(tmp_path / "s.zarr", tmp_path, monkeypatch)
