"""Bad inputs through the CLI, as a careless or hostile user gives them.

For every case: exit status 2, one line starting ``error:`` (a message may wrap over
the following lines), no traceback, and no file in the working folder created,
changed or removed. The CLI runs in-process through its entry point (``main``), the
same code path as the console script without the interpreter start-up per case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from sweep_support import TINY_SIRT_TOML, run_cli

from tomosweep.sweep import study_from_dict
from tomosweep.sweep.api import create_store

GOOD = TINY_SIRT_TOML


def variant(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


# study files: (id, text) — each is run as `tomosweep run study.toml --store s.zarr`
STUDIES = [
    ("no-acquisition", GOOD.replace("[acquisition]\nn_haadf = [5, 9]\nn_chem = [3]\n", "")),
    ("empty-axis", variant("n_haadf = [5, 9]", "n_haadf = []")),
    ("zero-tilts", variant("n_haadf = [5, 9]", "n_haadf = [0, 9]")),
    ("repeated-tilts", variant("n_haadf = [5, 9]", "n_haadf = [5, 5]")),
    ("absurd-tilts", variant("n_haadf = [5, 9]", "n_haadf = [5, 100000]")),
    ("tilts-not-numbers", variant("n_chem = [3]", 'n_chem = "three"')),
    ("tilt-range-reversed", variant("n_chem = [3]", "n_chem = [3]\ntilt_range = [70, -70]")),
    ("tilt-range-beyond-90", variant("n_chem = [3]", "n_chem = [3]\ntilt_range = [-100, 70]")),
    ("haadf-snr-zero", variant("n_chem = [3]", "n_chem = [3]\nhaadf_snr = 0")),
    ("haadf-snr-inf", variant("n_chem = [3]", "n_chem = [3]\nhaadf_snr = inf")),
    ("chem-snr-nan", variant("n_chem = [3]", "n_chem = [3]\nchem_snr = nan")),
    ("chem-snr-negative", variant("n_chem = [3]", "n_chem = [3]\nchem_snr = -1")),
    ("chem-snr-table-inf", variant("n_chem = [3]", "n_chem = [3]\nchem_snr = { Co = inf }")),
    ("chem-snr-table-missing", variant("n_chem = [3]", "n_chem = [3]\nchem_snr = { Co = 2, Cu = 2, O = 2 }")),
    (
        "chem-snr-table-unknown",
        variant("n_chem = [3]", "n_chem = [3]\nchem_snr = { Co = 2, Cu = 2, O = 2, Au = 2, Xx = 2 }"),
    ),
    ("background-negative", variant("n_chem = [3]", "n_chem = [3]\nbackground = -0.1")),
    ("background-huge", variant("n_chem = [3]", "n_chem = [3]\nbackground = 50")),
    ("gamma-low", variant("n_chem = [3]", "n_chem = [3]\ngamma = 0.5")),
    ("gamma-inf", variant("n_chem = [3]", "n_chem = [3]\ngamma = inf")),
    ("gamma-high", variant("n_chem = [3]", "n_chem = [3]\ngamma = 4")),
    ("unknown-specimen", variant('name = "nanocubes"', 'name = "nanospheres"')),
    ("name-and-file", variant('name = "nanocubes"', 'name = "nanocubes"\nfile = "x.npz"')),
    ("neither-name-nor-file", variant('name = "nanocubes"\n', "")),
    ("size-too-small", variant("size = 16", "size = 8")),
    ("size-too-large", variant("size = 16", "size = 5000")),
    ("unknown-specimen-option", variant("size = 16", "size = 16\noptions = { wobble = 3 }")),
    ("missing-specimen-file", variant('name = "nanocubes"', 'file = "missing.npz"')),
    ("garbage-specimen-file", variant('name = "nanocubes"', 'file = "garbage.npz"')),
    ("unknown-method", variant("[methods.sirt]", "[methods.sart]")),
    ("unknown-parameter", variant("n_iter = {", "n_iters = {")),
    ("range-reversed", variant("low = 2, high = 30", "low = 30, high = 2")),
    ("range-high-inf", variant("low = 2, high = 30", "low = 2, high = inf")),
    ("range-low-nan", variant("low = 2, high = 30", "low = nan, high = 30")),
    ("log-prior-from-zero", variant("low = 2, high = 30", "low = 0, high = 30")),
    ("unknown-prior", variant('prior = "log"', 'prior = "cubic"')),
    (
        "fixed-alpha-nan",
        variant("[methods.sirt]", "[methods.hebt]\nalpha = nan\nn_iter = { low = 2, high = 9 }\n[methods.sirt]"),
    ),
    ("method-searches-nothing", variant('n_iter = { low = 2, high = 30, prior = "log" }', "n_iter = 20")),
    ("zero-budget", variant("trials_per_cell = 3", "trials_per_cell = 0")),
    ("initial-over-budget", variant("initial_points = 2", "initial_points = 9")),
    ("unknown-liar", variant("initial_points = 2", 'initial_points = 2\nliar = "cl_median"')),
    ("unknown-sampler", variant("initial_points = 2", 'initial_points = 2\nsampler = "grid"')),
    ("unknown-top-level-key", variant("seed = 1", "seed = 1\nsead = 2")),
    ("unknown-device", variant("seed = 1", 'seed = 1\ndevice = "tpu"')),
    ("unknown-cluster-backend", GOOD + '[cluster]\nbackend = "kubernetes"\n'),
    ("key-of-another-backend", GOOD + '[cluster]\nbackend = "local"\nqueue = "compute"\n'),
    ("toml-syntax", GOOD + "[budget\n"),
    ("empty-file", ""),
]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        # the store's lock file holds the pid of the last driver that opened it, and every
        # opening for writing rewrites it: it is not data
        if path.is_file() and path.name != ".tomosweep.lock":
            stat = path.stat()
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return out


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    """A working folder with a valid store, files and folders to point the CLI at."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOMOSWEEP_DASK_LOG_LEVEL", "ERROR")  # `run` raises it in-process; restored after
    (tmp_path / "garbage.npz").write_bytes(b"not an archive")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "latin1.toml").write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    (tmp_path / "good.toml").write_text(GOOD)
    (tmp_path / "changed.toml").write_text(variant("trials_per_cell = 3", 'trials_per_cell = 3\nliar = "cl_max"'))
    (tmp_path / "plain_dir").mkdir()
    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["what"] = "someone else's data"
    study = study_from_dict(__import__("tomllib").loads(GOOD))
    for name in ("s.zarr", "old.zarr", "damaged.zarr"):
        create_store(study, tmp_path / name).close()
    zarr.open_group(tmp_path / "old.zarr", mode="r+").attrs["format_version"] = 1
    zarr.open_group(tmp_path / "damaged.zarr", mode="r+").attrs["n_committed"] = -1
    np.save(tmp_path / "keep.npy", np.arange(3))
    return tmp_path


CLI_CASES = [
    ("run-missing-study", ["run", "missing.toml", "--store", "new.zarr"]),
    ("run-not-utf8", ["run", "latin1.toml", "--store", "new.zarr"]),
    ("run-existing-store", ["run", "good.toml", "--store", "s.zarr"]),
    ("run-store-under-a-file", ["run", "good.toml", "--store", "a_file/new.zarr"]),
    ("run-store-is-a-file", ["run", "good.toml", "--store", "a_file"]),
    ("status-no-store", ["status", "nowhere.zarr"]),
    ("status-plain-folder", ["status", "plain_dir"]),
    ("status-foreign-zarr", ["status", "other.zarr"]),
    ("status-old-format", ["status", "old.zarr"]),
    ("status-damaged", ["status", "damaged.zarr"]),
    ("export-no-store", ["export", "nowhere.zarr", "--out", "x"]),
    ("export-onto-a-file", ["export", "s.zarr", "--out", "a_file"]),
    ("export-into-the-store", ["export", "s.zarr", "--out", "s.zarr/exports"]),
    ("export-into-another-zarr", ["export", "s.zarr", "--out", "other.zarr/exports"]),
    ("export-cell-off-grid", ["export", "s.zarr", "--out", "x", "--cell", "7,3"]),
    ("export-bad-cell", ["export", "s.zarr", "--out", "x", "--cell", "seven"]),
    ("reconstruct-bad-cell", ["reconstruct", "s.zarr", "--cell", "9x", "--out", "v.npz"]),
    ("reconstruct-onto-the-store", ["reconstruct", "s.zarr", "--cell", "5,3", "--out", "s.zarr", "--overwrite"]),
    ("reconstruct-onto-foreign-zarr", ["reconstruct", "s.zarr", "--cell", "5,3", "--out", "other.zarr", "--overwrite"]),
    ("reconstruct-onto-existing", ["reconstruct", "s.zarr", "--cell", "5,3", "--out", "garbage.npz"]),
    (
        "reconstruct-foreign-overwrite",
        ["reconstruct", "s.zarr", "--cell", "5,3", "--out", "garbage.npz", "--overwrite"],
    ),
    ("reconstruct-unsupported-suffix", ["reconstruct", "s.zarr", "--cell", "5,3", "--out", "v.mat"]),
    ("reconstruct-no-trials", ["reconstruct", "s.zarr", "--cell", "5,3", "--out", "v.npz"]),
    ("reconstruct-unknown-method", ["reconstruct", "s.zarr", "--cell", "5,3", "--out", "v.npz", "--method", "sart"]),
    ("reconstruct-cell-off-grid", ["reconstruct", "s.zarr", "--cell", "7,3", "--out", "v.npz"]),
    ("resume-no-store", ["resume", "nowhere.zarr"]),
    ("resume-old-format", ["resume", "old.zarr"]),
    ("resume-damaged", ["resume", "damaged.zarr"]),
    ("resume-changed-study", ["resume", "s.zarr", "--study", "changed.toml"]),
    ("resume-missing-study", ["resume", "s.zarr", "--study", "missing.toml"]),
    ("check-no-store", ["check", "nowhere.zarr"]),
    ("check-damaged", ["check", "damaged.zarr"]),
    ("job-script-missing-study", ["job-script", "missing.toml"]),
]


def _assert_clean_refusal(code, out, err, before, after):
    text = out + err
    assert code == 2, text
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), text
    assert sum(line.startswith("error:") for line in lines) == 1, text
    assert "Traceback" not in text
    assert after == before, "files changed"


@pytest.mark.parametrize(("case", "text"), STUDIES, ids=[c for c, _ in STUDIES])
def test_a_bad_study_file_is_refused_cleanly(folder, capsys, case, text):
    (folder / "study.toml").write_text(text)
    before = _tree(folder)
    code, out, err = run_cli(["run", "study.toml", "--store", "new.zarr"], capsys)
    _assert_clean_refusal(code, out, err, before, _tree(folder))
    assert not (folder / "new.zarr").exists()


@pytest.mark.parametrize(("case", "args"), CLI_CASES, ids=[c for c, _ in CLI_CASES])
def test_a_bad_command_line_is_refused_cleanly(folder, capsys, case, args):
    before = _tree(folder)
    code, out, err = run_cli(args, capsys)
    _assert_clean_refusal(code, out, err, before, _tree(folder))


def test_the_count_of_bad_inputs():
    # the README's status table and docs/explanation/reliability.md quote this number
    assert len(STUDIES) + len(CLI_CASES) == 80
