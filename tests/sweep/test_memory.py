"""A trial's memory: the estimate against measured peaks, and the refusal before a study starts."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sweep_support import tiny_study

from tomosweep.errors import SpecError
from tomosweep.sweep.memory import TrialMemory, check_fits, trial_bytes
from tomosweep.sweep.methods import METHODS
from tomosweep.sweep.spec import study_from_dict
from tomosweep.sweep.trial import build_cell_data


@pytest.mark.parametrize("method", ["fused", "sirt", "hebt", "poisson_ml"])
def test_working_set_estimate_covers_the_measured_peak(method):
    study = study_from_dict(tiny_study(phantom={"name": "nanocubes", "size": 32}))
    cell = build_cell_data(study, 20, 6)
    params = {p.name: p.default for p in METHODS[method].params} | {"n_iter": 4}
    METHODS[method].run(cell, params, "cpu")  # warm: matrices and caches outside the measurement
    tracemalloc.start()
    try:
        METHODS[method].run(cell, params, "cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    volume = cell.truth.size * 8
    estimate = METHODS[method].memory_volumes * volume
    assert peak <= estimate <= 2.0 * peak, (peak / volume, METHODS[method].memory_volumes)


def test_estimate_grows_with_size_tilts_and_batch():
    base = trial_bytes("fused", n=64, n_elements=4, n_haadf=45, n_chem=9)
    assert trial_bytes("fused", n=128, n_elements=4, n_haadf=45, n_chem=9) > 7 * base
    assert trial_bytes("fused", n=64, n_elements=4, n_haadf=180, n_chem=9) > base
    assert trial_bytes("fused", n=64, n_elements=4, n_haadf=45, n_chem=9, batch=4) > 3.5 * base
    # the paper's largest cell: 256³, 4 elements, 180 HAADF and 25 chemical tilts, float64
    paper = trial_bytes("fused", n=256, n_elements=4, n_haadf=180, n_chem=25)
    assert 12e9 < paper < 14e9


def test_a_trial_that_cannot_fit_is_refused_with_both_numbers():
    trials = [TrialMemory("fused", 256, 4, 180, 25, 13_000_000_000)]
    with pytest.raises(SpecError) as err:
        check_fits(trials, (8_000_000_000, "GPU memory per worker"))
    text = str(err.value)
    assert "fused at 256³ × 4 elements with 180 HAADF and 25 chemical tilts needs about 13.0 GB" in text
    assert "a worker offers 8.00 GB (GPU memory per worker)" in text
    check_fits(trials, (16_000_000_000, "GPU memory per worker"))
    check_fits(trials, None)  # no worker known yet: nothing to compare with


def test_run_is_refused_before_the_store_exists(tmp_path):
    from distributed import Client, LocalCluster

    from tomosweep.sweep.api import run_study

    study = tiny_study(phantom={"name": "nanocubes", "size": 64}, acquisition={"n_haadf": [45], "n_chem": [9]})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, memory_limit="150MB") as cluster:
        with Client(cluster) as client:
            with pytest.raises(SpecError, match=r"cannot fit: fused at 64³ × 4 elements .* offers 0\.1[45] GB"):
                run_study(study_from_dict(study), tmp_path / "s.zarr", client=client)
    assert not (tmp_path / "s.zarr").exists()
    assert np.isfinite(trial_bytes("sirt", n=64, n_elements=4, n_haadf=45, n_chem=9))
