"""Proposals only: where the next trial of a cell should go.

The per-cell GP (:mod:`.cell`) and the map-wide GP (:mod:`.map`) answer the runner's asks. This room
knows no store, no Dask and no study file; it imports nothing of the project but the errors.
"""
