"""The way back to the microscope: reconstruct a measured series with a study's or a tune's weights
(:func:`reconstruct_data`, staged into a folder by :func:`reconstruct_data_into`), the held-out
report (:func:`heldout_check`), replicates of a study (:func:`replicate_cells`) and the
acquisition plan (:func:`plan`)."""

from tomosweep.microscope.heldout import heldout_check
from tomosweep.microscope.outputs import reconstruct_data_into
from tomosweep.microscope.plan import plan
from tomosweep.microscope.reconstruct import reconstruct_data
from tomosweep.microscope.replicate import replicate_cells
from tomosweep.microscope.weights import Weights, file_weights, study_weights

__all__ = [
    "Weights",
    "file_weights",
    "heldout_check",
    "plan",
    "reconstruct_data",
    "reconstruct_data_into",
    "replicate_cells",
    "study_weights",
]
