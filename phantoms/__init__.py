"""Ground-truth specimens and simulated HAADF + chemical acquisition."""

from tomosweep.phantoms.acquisition import Acquisition, TiltScheme, measured_snr, simulate, simulate_yuan
from tomosweep.phantoms.specimen import Specimen

__all__ = ["Acquisition", "Specimen", "TiltScheme", "measured_snr", "simulate", "simulate_yuan"]
