"""A file phantom's ``size`` is its file's: repeated it is accepted, any other value refused.

Before, ``[phantom] size`` beside ``file`` was silently ignored, so a study saying 48 ran on
a 16-voxel specimen. Now a study file may leave it out or repeat the file's size; another
value is one line naming both (exit 2 from the CLI, nothing written).
"""

from __future__ import annotations

import sys

import pytest
from sweep_support import TINY_SIRT_TOML

from tomosweep.errors import SpecError
from tomosweep.phantoms import make_specimen, save_specimen
from tomosweep.sweep import load_study

N = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder with a 16-voxel nanocubes specimen saved as ``truth.npz``."""
    path = tmp_path_factory.mktemp("file-phantom")
    save_specimen(make_specimen("nanocubes", N), path / "truth.npz")
    return path


def _study(folder, name: str, size_line: str):
    text = TINY_SIRT_TOML.replace('name = "nanocubes"\nsize = 16\n', f'file = "truth.npz"\n{size_line}')
    assert 'file = "truth.npz"' in text
    path = folder / name
    path.write_text(text)
    return path


def _refusal(folder, size: int) -> str:
    return (
        f"{folder / 'study-bad.toml'}: phantom.size = {size} but phantom.file {folder / 'truth.npz'} holds volumes "
        f"of {N} × {N} × {N} voxels (size {N}); a file phantom's size is its file's: remove size or set it to {N}"
    )


@pytest.mark.parametrize("size_line", ["", f"size = {N}\n"], ids=["absent", "equal"])
def test_a_size_left_out_or_equal_to_the_files_is_accepted(folder, size_line):
    study = load_study(_study(folder, f"study-{bool(size_line)}.toml", size_line))
    assert study.phantom.file == str(folder / "truth.npz") and study.phantom.name is None


@pytest.mark.parametrize("size", [48, 32])
def test_a_size_other_than_the_files_is_refused_naming_both(folder, size):
    with pytest.raises(SpecError) as refused:
        load_study(_study(folder, "study-bad.toml", f"size = {size}\n"))
    assert str(refused.value) == _refusal(folder, size)


def test_a_broken_file_with_a_size_gives_the_files_own_error_later(tmp_path):
    (tmp_path / "truth.npz").write_bytes(b"not an archive")
    study = load_study(_study(tmp_path, "study.toml", "size = 48\n"))  # the size check cannot read it: no verdict
    assert study.phantom.file == str(tmp_path / "truth.npz")


def test_the_cli_refuses_it_in_one_line_and_writes_nothing(folder, capsys, monkeypatch):
    from tomosweep import cli

    study = _study(folder, "study-bad.toml", "size = 48\n")
    store = folder / "never.zarr"
    monkeypatch.setattr(sys, "argv", ["tomosweep", "run", str(study), "--store", str(store)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    captured = capsys.readouterr()
    assert exited.value.code == 2
    assert captured.err.splitlines() == [f"error: {_refusal(folder, 48)}"], captured.err
    assert captured.out == "" and not store.exists()
