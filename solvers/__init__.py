"""Reconstruction core: projector, SIRT, HEBT, fused multi-modal, TV, metrics, quantification."""

from tomosweep.solvers.fused import fused, poisson_ml, poisson_ml_tv
from tomosweep.solvers.metrics import mse, nrmse, scaled_mse, ssim_structure
from tomosweep.solvers.projector import Projector
from tomosweep.solvers.result import Result
from tomosweep.solvers.sirt import sirt

__all__ = [
    "Projector",
    "Result",
    "fused",
    "mse",
    "nrmse",
    "poisson_ml",
    "poisson_ml_tv",
    "scaled_mse",
    "sirt",
    "ssim_structure",
]
