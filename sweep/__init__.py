"""Studies, per-cell Bayesian optimisation, the asynchronous trial runner, and the CLI.

The Python API mirrors the ``tomosweep`` command: :func:`run_study`,
:func:`resume_study`, :func:`study_status`, :func:`export_store`,
:func:`reconstruct_cell`; studies are read with :func:`load_study`.
"""

from tomosweep.sweep.api import export_store, reconstruct_cell, resume_study, run_study, study_status
from tomosweep.sweep.methods import METHODS
from tomosweep.sweep.runner import RunSummary
from tomosweep.sweep.spec import Study, load_study, study_from_dict

__all__ = [
    "METHODS",
    "RunSummary",
    "Study",
    "export_store",
    "load_study",
    "reconstruct_cell",
    "resume_study",
    "run_study",
    "study_from_dict",
    "study_status",
]
