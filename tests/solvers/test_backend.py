"""Backend selection: CPU always works; a missing GPU is a clear error, never a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from tomosweep.errors import BackendError, InputError
from tomosweep.solvers import Projector, backend, sirt


def test_cpu_and_auto_resolve_without_cupy():
    assert backend.array_module("cpu") is np
    assert backend.resolve_device("auto") == ("gpu" if backend.gpu_available() else "cpu")
    assert backend.get_array_module(np.zeros(3)) is np


def test_unknown_device_is_rejected():
    with pytest.raises(InputError, match="device must be one of"):
        backend.resolve_device("tpu")


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present, so asking for one succeeds")
def test_missing_gpu_is_a_clear_error():
    proj = Projector(8, [0.0, 45.0], cache_dir=False)
    with pytest.raises(BackendError, match=r"A GPU was requested but .*pip install 'tomosweep\[gpu\]'"):
        sirt(proj, np.ones((2, 8, 1)), device="gpu")
