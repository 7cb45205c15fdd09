"""The way back to the microscope: reconstruct a measured series with a study's or a tune's weights
(:mod:`.reconstruct`, staged into a folder by :mod:`.outputs`), the held-out report, replicates of a
study (:mod:`.replicate`) and the acquisition plan (:mod:`.plan`)."""
