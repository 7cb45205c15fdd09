"""The version comes from the git tag (setuptools-scm) through the installed metadata; the command
shows it, every store records it, and the package tells type checkers it is typed (PEP 561)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from packaging.version import Version
from typer.testing import CliRunner

import tomosweep
from tomosweep.cli import app
from tomosweep.results import SweepStore


def test_the_version_is_the_installed_distributions() -> None:
    assert tomosweep.__version__ == importlib.metadata.version("tomosweep")
    Version(tomosweep.__version__)  # PEP 440, or pip would not have installed it


def test_tomosweep_version_prints_it_and_nothing_else() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"tomosweep {tomosweep.__version__}"


def test_a_new_store_records_the_version_that_wrote_it(tmp_path: Path) -> None:
    SweepStore.create(
        tmp_path / "S.zarr",
        spec={},
        spec_hash="x",
        methods=["sirt"],
        param_names=["n_iter"],
        elements=["Co"],
        n_haadf=[5],
        n_chem=[3],
    ).close()
    with SweepStore.open(tmp_path / "S.zarr") as store:
        assert store.attrs["tomosweep_version"] == tomosweep.__version__


def test_the_package_is_marked_typed() -> None:
    assert (Path(tomosweep.__file__).parent / "py.typed").is_file()
