"""Volumes in the ecosystem's formats, proven by the ecosystem's own readers: ``reconstruct-data`` and
``reconstruct`` write a HyperSpy signal that RosettaSciIO reads back with its axes, units and element
names, and the OME-Zarr of ``reconstruct-data`` passes ome-zarr-models for the NGFF version it declares."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import tifffile
import trial_hooks
import zarr
from ome_zarr_models import v04, v05
from rsciio.hspy import file_reader
from sweep_support import tiny_study
from typer.testing import CliRunner

from tomosweep.cli import app
from tomosweep.microscope.reconstruct import reconstruct_data, write_ome_zarr
from tomosweep.phantoms import load_specimen
from tomosweep.series import write_mrc, write_rawtlt
from tomosweep.sweep.api import run_study
from tomosweep.sweep.spec import study_from_dict
from tomosweep.sweep.trial import simulate_cell

# the NGFF versions ome-zarr-models validates, each with its model of one multiscale image
NGFF_IMAGE = {"0.4": v04.Image, "0.5": v05.Image}


def validated_ome_zarr(path) -> v04.Image | v05.Image:
    """The OME-Zarr image at ``path``, validated against the NGFF version its metadata declare."""
    group = zarr.open_group(str(path), mode="r")
    attrs = group.attrs.asdict()
    # NGFF 0.5 says its version once, under "ome"; 0.4 in each multiscale
    declared = attrs["ome"]["version"] if "ome" in attrs else attrs["multiscales"][0]["version"]
    assert declared in NGFF_IMAGE, f"{path} declares NGFF {declared}, which ome-zarr-models does not validate"
    return NGFF_IMAGE[declared].from_zarr(group)


def test_ome_zarr_passes_the_ngff_validator_and_a_broken_one_does_not(tmp_path):
    volumes = np.random.default_rng(0).random((2, 8, 8, 6))
    for pixel_size in (0.5, None):
        path = write_ome_zarr(tmp_path / f"v{pixel_size}.ome.zarr", volumes, ("Co", "O"), pixel_size)
        image = validated_ome_zarr(path)
        assert isinstance(image, v04.Image)
        multiscale = image.attributes.multiscales[0]
        assert [a.name for a in multiscale.axes] == ["c", "z", "y", "x"]
        assert [a.unit for a in multiscale.axes] == [None] + ["nanometer" if pixel_size else None] * 3
        assert [c.label for c in image.attributes.omero.channels] == ["Co", "O"]
    # the validator bites: a scale that does not match the axes is refused
    group = zarr.open_group(str(tmp_path / "v0.5.ome.zarr"), mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1.0, 0.5, 0.5]
    group.attrs["multiscales"] = multiscales
    with pytest.raises(pydantic.ValidationError):
        validated_ome_zarr(tmp_path / "v0.5.ome.zarr")


STUDY = {
    "name": "formats",
    "seed": 2,
    "phantom": {"name": "core_shell_cube", "size": 16},
    "acquisition": {"n_haadf": [12], "n_chem": [4]},
    "methods": {"fused": {"lambda_haadf": {"low": 0.4, "high": 0.6}, "lambda_tv": 1.0, "n_iter": 8}},
    "budget": {"trials_per_cell": 1, "initial_points": 1},
    "cluster": {"n_workers": 1},
}


def test_reconstruct_data_writes_a_hyperspy_signal_and_valid_ome_zarr(tmp_path):
    _, acq = simulate_cell(study_from_dict(STUDY), 12, 4)
    data = tmp_path / "data"
    data.mkdir()
    write_mrc(data / "haadf.mrc", acq.haadf, acq.haadf_angles)
    for k, e in enumerate(acq.elements):
        tifffile.imwrite(data / f"{e}.tif", acq.chem[k].astype(np.float32), photometric="minisblack")
    write_rawtlt(data / "maps.rawtlt", acq.chem_angles)
    maps = "\n".join(f'{e} = "{e}.tif"' for e in acq.elements)
    background = ", ".join(f"{e} = {acq.background[e]!r}" for e in acq.elements)
    (data / "data.toml").write_text(
        f'gamma = 1.7\npixel_size_nm = 0.8\n[haadf]\nfile = "haadf.mrc"\nbackground = 0\n'
        f'[chem]\nangles = "maps.rawtlt"\nbackground = {{ {background} }}\n[chem.elements]\n{maps}\n'
        '[align]\nmethod = "none"\n'
        '[weights]\nmethod = "fused"\nlambda_haadf = 0.5\nlambda_tv = 1.0\nn_iter = 8\n'
    )
    out = tmp_path / "out"
    reconstruct_data(data / "data.toml", out, holdout=0.0)
    volumes = np.load(out / "volumes.npz")["volumes"]  # (element, y, z, x)

    [signal] = file_reader(str(out / "volumes.hspy"))
    assert signal["data"].shape == (len(acq.elements), 16, 16, 16)
    np.testing.assert_array_equal(signal["data"], volumes.transpose(0, 2, 1, 3))
    assert [a["name"] for a in signal["axes"]] == ["element", "z", "y", "x"]
    assert [a.get("units") for a in signal["axes"]] == [None, "nm", "nm", "nm"]
    assert [float(a["scale"]) for a in signal["axes"]][1:] == [0.8, 0.8, 0.8]
    assert list(signal["metadata"]["Sample"]["elements"]) == list(acq.elements)
    assert signal["metadata"]["General"]["title"] == ", ".join(acq.elements)
    assert signal["metadata"]["Tomosweep"]["method"] == "fused"
    # the same file is a ground truth a study can use
    assert load_specimen(out / "volumes.hspy").elements == tuple(acq.elements)

    image = validated_ome_zarr(out / "volumes.ome.zarr")
    assert [c.label for c in image.attributes.omero.channels] == list(acq.elements)


def test_reconstruct_writes_a_hyperspy_signal_with_its_nrmse(client, tmp_path):
    store = tmp_path / "s.zarr"
    study = tiny_study(methods={"sirt": {"n_iter": {"low": 2, "high": 30, "prior": "log"}}})
    run_study(study_from_dict(study), store, client=client, trial_fn=trial_hooks.synthetic_trial)
    out = tmp_path / "best.hspy"
    result = CliRunner().invoke(
        app, ["reconstruct", str(store), "--cell", "5,3", "--method", "sirt", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    [signal] = file_reader(str(out))
    elements = tuple(signal["metadata"]["Sample"]["elements"])
    assert signal["data"].shape == (len(elements), 16, 16, 16) and len(elements) >= 2
    assert [a["name"] for a in signal["axes"]] == ["element", "z", "y", "x"]
    assert all("units" not in a for a in signal["axes"])  # a simulated specimen has no pixel size
    specimen = load_specimen(out)
    assert specimen.info["method"] == "sirt" and specimen.info["cell"] == {"n_haadf": 5, "n_chem": 3}
    assert set(specimen.info["nrmse"]) == {*elements, "mean"}
