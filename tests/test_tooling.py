"""Static tools resolve every ``tomosweep.*`` import of a developer install.

The package folders become ``tomosweep.<name>`` through setuptools' ``package-dir``; the
default editable install maps them with an import hook only Python runs, the strict one
(CONTRIBUTING.md, "Developer install") with a tree of links that pyright and jedi follow. CI
installs the strict way and runs pyright over the package; these tests say the same on a
developer's machine, and skip with the reason under another install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tomosweep

ROOT = Path(__file__).resolve().parents[1]
PROBE = """\
from tomosweep.solvers import Projector, fused
from tomosweep.phantoms import make_specimen
from tomosweep.series import load_series
from tomosweep.sweep.spec import Study
from tomosweep.results.export import trials_frame
from tomosweep.cluster.settings import ClusterSettings
from tomosweep.errors import TomosweepError
"""


@pytest.fixture(scope="module")
def link_tree() -> None:
    if Path(tomosweep.__file__).parent.name != "tomosweep":
        pytest.skip(
            "tomosweep is installed with the default editable mode, whose import hook static tools cannot "
            "follow: pip install -e '.[test]' --config-settings editable_mode=strict"
        )


@pytest.mark.usefixtures("link_tree")
def test_pyright_resolves_the_package_imports(tmp_path: Path) -> None:
    if importlib.util.find_spec("pyright") is None:
        pytest.skip("pyright is not installed (it is in the test extra)")
    (tmp_path / "probe.py").write_text(PROBE)
    # run outside the repository: the probe sees the installed package, as an editor would
    done = subprocess.run(
        [sys.executable, "-m", "pyright", "--pythonpath", sys.executable, "--outputjson", "probe.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"},
    )
    report = json.loads(done.stdout)
    unresolved = [d["message"] for d in report["generalDiagnostics"] if d.get("rule") == "reportMissingImports"]
    assert not unresolved, unresolved
    assert report["summary"]["errorCount"] == 0, report["generalDiagnostics"]


@pytest.mark.usefixtures("link_tree")
def test_jedi_goes_to_the_module_file() -> None:
    jedi = pytest.importorskip("jedi", reason="jedi is an editor's tool, not a dependency")
    source = "from tomosweep.solvers import fused\n"
    script = jedi.Script(source, path=str(ROOT / "probe.py"), environment=jedi.InterpreterEnvironment())
    names = script.goto(1, source.index("fused"), follow_imports=True)
    # the link in the strict install's tree is the repository's file
    assert [Path(n.module_path).resolve() for n in names] == [ROOT / "solvers" / "fused.py"]
