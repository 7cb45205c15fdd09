"""Reconstruction core: projector, SIRT, HEBT, fused multi-modal, TV, metrics, quantification."""

from tomosweep.solvers.metrics import mse, nrmse, scaled_mse, ssim_structure
from tomosweep.solvers.projector import Projector
from tomosweep.solvers.result import Result
from tomosweep.solvers.sirt import sirt

__all__ = [
    "Projector",
    "Result",
    "mse",
    "nrmse",
    "scaled_mse",
    "sirt",
    "ssim_structure",
]
