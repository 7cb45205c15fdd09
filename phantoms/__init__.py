"""Ground-truth specimens and simulated HAADF + chemical acquisition."""

from tomosweep.phantoms.acquisition import (
    Acquisition,
    TiltScheme,
    acquisition_key,
    measured_snr,
    simulate,
    simulate_cached,
    simulate_yuan,
)
from tomosweep.phantoms.files import load_specimen, save_specimen
from tomosweep.phantoms.specimen import Specimen
from tomosweep.phantoms.specimens import (
    SPECIMENS,
    conio_composite,
    core_shell_2d,
    core_shell_cube,
    core_shell_sphere,
    make_specimen,
    nanocubes,
)

__all__ = [
    "SPECIMENS",
    "Acquisition",
    "Specimen",
    "TiltScheme",
    "acquisition_key",
    "conio_composite",
    "core_shell_2d",
    "core_shell_cube",
    "core_shell_sphere",
    "load_specimen",
    "make_specimen",
    "measured_snr",
    "nanocubes",
    "save_specimen",
    "simulate",
    "simulate_cached",
    "simulate_yuan",
]
