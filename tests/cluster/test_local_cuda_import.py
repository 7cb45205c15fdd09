"""``backend = "local-cuda"`` says why dask-cuda cannot be used: not installed, or installed
with one of its own imports failing (then the original error is in the one line)."""

from __future__ import annotations

import builtins

import pytest

from tomosweep.cluster import local_cuda
from tomosweep.cluster.settings import ClusterSettings
from tomosweep.errors import ClusterError


def _failing_import(monkeypatch, error: ImportError) -> None:
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "dask_cuda" or name.startswith("dask_cuda."):
            raise error
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


def _message(monkeypatch, error: ImportError) -> str:
    _failing_import(monkeypatch, error)
    with pytest.raises(ClusterError) as refused:
        local_cuda.start(ClusterSettings(backend="local-cuda"), environ={})
    return str(refused.value)


def test_dask_cuda_not_installed_says_to_install_it(monkeypatch):
    message = _message(monkeypatch, ModuleNotFoundError("No module named 'dask_cuda'", name="dask_cuda"))
    assert message == 'backend = "local-cuda" needs dask-cuda: pip install "tomosweep[gpu]" (on a machine with CUDA)'


def test_a_failing_import_inside_dask_cuda_is_named(monkeypatch):
    nested = ModuleNotFoundError("No module named 'pynvml'", name="pynvml")
    assert _message(monkeypatch, nested) == (
        'backend = "local-cuda": dask-cuda is installed but cannot be imported '
        "(ModuleNotFoundError: No module named 'pynvml'); fix that import, or use backend = \"local\""
    )


def test_a_multi_line_import_error_stays_one_line(monkeypatch):
    nested = ImportError("libnvidia-ml.so.1: cannot open shared object file\n  (is the NVIDIA driver installed?)")
    message = _message(monkeypatch, nested)
    assert "\n" not in message
    assert "(ImportError: libnvidia-ml.so.1: cannot open shared object file (is the NVIDIA driver installed?))" in (
        message
    )
