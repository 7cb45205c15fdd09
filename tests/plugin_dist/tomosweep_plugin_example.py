"""A reconstruction method of one's own: per-element SIRT of the chemical maps as measured."""

from tomosweep.solvers import sirt_per_element
from tomosweep.sweep.methods import Method, Param, register


def raw_sirt(cell, params, device):
    # cell.chem is (n_elements, n_tilts, n_det, n_x); the Result's volume must hold every
    # element's map, (n_elements, n_y, n_z, n_x) like the truth, in cell.elements' order
    return sirt_per_element(cell.chem_projector, cell.chem, n_iter=int(params["n_iter"]), device=device)


METHOD = register(
    Method(
        "raw_sirt",
        (Param("n_iter", "int", 10, 2, 50, "log", "SIRT iterations per element map"),),
        raw_sirt,
        "SIRT per element, background left in",
        memory_volumes=4.0,
    )
)
