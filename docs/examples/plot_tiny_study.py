"""
A tiny study from Python
========================

The quick start's study, shrunk to run in well under a minute: a 16³ specimen, a 2 × 2 grid of
(HAADF tilts × chemical tilts), fused multi-modal tomography (its two weights over their default ranges, at
most 40 iterations) against SIRT (its iteration count searched), 3 trials per method and cell.
:func:`tomosweep.sweep.run_study` is what ``tomosweep run`` calls; the store it writes is read
back with :func:`tomosweep.sweep.study_status`.

Here the trials run on a Dask client of one worker thread in this process, handed to
``run_study``; without ``client=`` it starts the study's ``[cluster]`` (by default a local
cluster of one worker process per core), as ``tomosweep run`` does.
"""

import logging
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from distributed import Client

from tomosweep.sweep import run_study, study_from_dict, study_status

study = study_from_dict(
    {
        "name": "tiny",
        "phantom": {"name": "nanocubes", "size": 16},
        "acquisition": {"n_haadf": [10, 20], "n_chem": [3, 6]},
        "methods": {
            "fused": {
                "lambda_haadf": {"low": 0.01, "high": 100, "prior": "log"},
                "lambda_tv": {"low": 0.05, "high": 20, "prior": "log"},
                "n_iter": 40,
            },
            "sirt": {"n_iter": {"low": 2, "high": 40, "prior": "log"}},
        },
        "budget": {"trials_per_cell": 3, "initial_points": 2},
    }
)
folder = Path(tempfile.mkdtemp())
# silence_logs: Dask's own log lines stay out of the output, as `tomosweep run` keeps them in its log
with Client(
    processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None, silence_logs=logging.CRITICAL
) as client:
    summary = run_study(study, folder / "tiny.zarr", client=client)
print(summary)

# %%
# One row per (method, cell): trials, best NRMSE and the best weights.
table = study_status(folder / "tiny.zarr")
print(table.to_string())

# %%
# The maps: best NRMSE per cell, chemical tilts along x, HAADF tilts along y, one scale for both
# methods (``tomosweep export`` draws the same).
fig, axes = plt.subplots(1, 2, figsize=(7, 3), constrained_layout=True)
for ax, (method, rows) in zip(axes, table.groupby("method"), strict=True):
    pivot = rows.pivot(index="n_haadf", columns="n_chem", values="best_nrmse").sort_index(ascending=False)
    image = ax.imshow(pivot.to_numpy(), cmap="viridis_r", vmin=table.best_nrmse.min(), vmax=table.best_nrmse.max())
    ax.set_xticks(range(len(pivot.columns)), [str(c) for c in pivot.columns])
    ax.set_yticks(range(len(pivot.index)), [str(h) for h in pivot.index])
    ax.set_xlabel("chemical tilts")
    ax.set_ylabel("HAADF tilts")
    ax.set_title(method)
    for (i, j), value in np.ndenumerate(pivot.to_numpy()):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white")
fig.colorbar(image, ax=axes, label="best mean NRMSE")
plt.show()
