"""
Specimens and their simulated tilt series
=========================================

Build a built-in specimen, simulate a HAADF and a chemical tilt series, and look at them.
"""

import matplotlib.pyplot as plt

from tomosweep.phantoms import TiltScheme, make_specimen, simulate

specimen = make_specimen("nanocubes", 24)
acq = simulate(specimen, TiltScheme(15, chem_every=5), haadf_snr=2000, chem_snr=2.5, rng=0)
fig, axes = plt.subplots(1, 2, figsize=(6, 3))
axes[0].imshow(acq.haadf[:, :, 12], cmap="gray")
axes[1].imshow(acq.chem[0][:, :, 12], cmap="magma")
plt.show()
