"""Reconstruction core: projector, SIRT, HEBT, fused multi-modal, TV, metrics, quantification."""

from tomosweep.solvers.fused import FusedStart, fused, fused_start, poisson_ml, poisson_ml_tv
from tomosweep.solvers.hebt import ResponseRatios, hebt, prefilter_chem, response_ratios
from tomosweep.solvers.metrics import mse, nrmse, scaled_mse, ssim_structure
from tomosweep.solvers.physics import (
    XrayLine,
    f_factor,
    predicted_response_ratio,
    table2_line,
    xray_line,
    yuan_table2,
    z_factor,
)
from tomosweep.solvers.projector import Projector
from tomosweep.solvers.quantify import (
    EsfThreshold,
    Quantification,
    esf_threshold,
    quantify,
    weight_fractions,
)
from tomosweep.solvers.result import Result
from tomosweep.solvers.sirt import sirt, sirt_per_element

__all__ = [
    "EsfThreshold",
    "Projector",
    "Quantification",
    "ResponseRatios",
    "Result",
    "XrayLine",
    "esf_threshold",
    "f_factor",
    "FusedStart",
    "fused",
    "fused_start",
    "hebt",
    "mse",
    "nrmse",
    "poisson_ml",
    "poisson_ml_tv",
    "predicted_response_ratio",
    "prefilter_chem",
    "quantify",
    "response_ratios",
    "scaled_mse",
    "sirt",
    "sirt_per_element",
    "ssim_structure",
    "table2_line",
    "weight_fractions",
    "xray_line",
    "yuan_table2",
    "z_factor",
]
