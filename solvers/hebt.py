r"""HAADF-EDS bimodal tomography, HEBT (Zhong 2017; quantified by Yuan 2021 §2.2).

The HAADF signal is a weighted sum of the element signals (Yuan 2021 eq. 15),

.. math:: I^H = \sum_{A=1}^k r_A I_A, \qquad r_A = \frac{D^H_e N_v z_A}{n f_A}\ \text{(eq. 16)},

so after scaling each EDS tilt series by its response ratio, every element map
:math:`X^b_A \propto z_A C_A \rho` is seen both by its own EDS projections and, summed
over elements, by the HAADF projections. HEBT solves the stacked least-squares
problem of eq. 17 for all element maps at once, with the HAADF weight α ∈ (0, 1):

.. math::

    X^{b*} = \arg\min_{X^b \ge 0} \lVert I^b - W^b X^b\rVert_2^2,\qquad
    I^b = \begin{pmatrix} (1-\alpha) r_1 I_1 \\ \vdots \\ (1-\alpha) r_k I_k \\
          \alpha I^H \end{pmatrix},\qquad
    W^b = \begin{pmatrix} (1-\alpha) W_c & & \\ & \ddots & \\ & & (1-\alpha) W_c \\
          \alpha W_h & \cdots & \alpha W_h \end{pmatrix}.

The last block row (the HAADF one) was lost in the paper's typesetting; it follows
from eq. 14–16: :math:`r_A I_A = D^H_e N_v W(z_A C_A\rho)` and
:math:`I^H = D^H_e N_v \sum_A W(z_A C_A \rho)`, so both rows are consistent with
:math:`X^b_A = D^H_e N_v z_A C_A \rho`. ``W_c`` and ``W_h`` are the chemical and HAADF
projectors; they may have different tilts (the usual case: many HAADF tilts, few
chemical ones) but share the slice size and detector width.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import scipy.ndimage
import scipy.optimize

from tomosweep.errors import InputError
from tomosweep.solvers import backend, validation
from tomosweep.solvers.projector import Projector
from tomosweep.solvers.result import Callback, CostLog, Result
from tomosweep.solvers.sirt import safe_inverse, sirt_iterate

_ANGLE_MATCH_DEG = 1e-6


class ResponseRatios(NamedTuple):
    """Response ratios :math:`r_A` (Yuan 2021 eq. 15) and the fit's coefficient of
    determination :math:`R^2`."""

    ratios: np.ndarray
    r_squared: float


def _as_stack(chem: Any) -> Any:
    xp = backend.get_array_module(chem)
    return chem if xp is not np else np.asarray(chem)


def _check_counts(arr: Any, name: str) -> Any:
    return validation.finite_array(arr, name, nonneg=True)


def prefilter_chem(chem_tilt_series: Any, sigma: float = 0.8) -> np.ndarray:
    """Gaussian pre-filter of EDS sinograms (Yuan 2021 §3.1.1, σ = 0.8).

    Smooths each element's sinogram over the (tilt, detector) axes of every slice —
    the denoising Yuan applies before both EDS-SIRT and HEBT. ``chem_tilt_series`` is
    ``(n_elements, n_angles, n_det, n_x)``; σ = 0 returns the data unchanged. NumPy
    float64 out (runs once per reconstruction, on the CPU).
    """
    chem = np.asarray(backend.to_numpy(chem_tilt_series), dtype=np.float64)
    if chem.ndim != 4:
        raise InputError(f"chem_tilt_series must be (n_elements, n_angles, n_det, n_x), got {chem.shape}")
    if sigma < 0 or not np.isfinite(sigma):
        raise InputError(f"gaussian_sigma must be finite and ≥ 0, got {sigma!r}")
    if sigma == 0:
        return chem
    return scipy.ndimage.gaussian_filter(chem, sigma=(0.0, sigma, sigma, 0.0))


def _fit_response_ratios(haadf: np.ndarray, chem: np.ndarray) -> ResponseRatios:
    """Non-negative least squares of ``haadf`` on the rows of ``chem`` (k, M), float64.

    Works through the k×k normal equations so the cost is one pass over the data
    whatever its size: with ``G = C Cᵀ = V diag(λ) Vᵀ`` and ``b = C h``,
    ``‖Cᵀr − h‖² = ‖diag(√λ) Vᵀ r − diag(1/√λ) Vᵀ b‖² + const`` (on λ > 0), which
    :func:`scipy.optimize.nnls` solves exactly.
    """
    scale = np.sqrt(np.einsum("km,km->k", chem, chem))
    active = scale > 0
    ratios = np.zeros(chem.shape[0])
    if active.any():
        normed = chem[active] / scale[active, None]
        gram = normed @ normed.T
        rhs = normed @ haadf
        eigval, eigvec = np.linalg.eigh(gram)
        keep = eigval > eigval.max() * 1e-12
        root = np.sqrt(eigval[keep])
        design = root[:, None] * eigvec[:, keep].T
        target = (eigvec[:, keep].T @ rhs) / root
        solution, _ = scipy.optimize.nnls(design, target)
        ratios[active] = solution / scale[active]
    residual = haadf - ratios @ chem
    total = haadf - haadf.mean()
    ss_tot = float(total @ total)
    r_squared = 1.0 - float(residual @ residual) / ss_tot if ss_tot > 0 else float("nan")
    return ResponseRatios(ratios, r_squared)


def response_ratios(haadf_tilt_series: Any, chem_tilt_series: Any) -> ResponseRatios:
    r"""Estimate the HEBT response ratios by linear regression (Yuan 2021 eq. 15).

    Every pixel ``i`` of the tilt series (all angles, detector bins and slices) gives
    one equation :math:`I^H_i = \sum_A r_A I_{A,i}` (no intercept: no material, no
    signal). The ratios are the non-negative least-squares solution

    .. math:: r = \arg\min_{r \ge 0} \sum_i \Bigl(I^H_i - \sum_A r_A I_{A,i}\Bigr)^2,

    and :math:`R^2 = 1 - \sum_i (I^H_i - \sum_A r_A I_{A,i})^2 / \sum_i (I^H_i - \bar
    I^H)^2`. An element whose tilt series is all zero gets :math:`r_A = 0`.

    Both modalities must be at the **same tilts**: when more HAADF tilts were taken
    than chemical ones, pass the HAADF projections at the chemical tilts only.
    Noise in the EDS counts biases the ratios low (errors in the regressors), so
    denoised (e.g. Gaussian-filtered) EDS tilt series give better ratios.

    Parameters
    ----------
    haadf_tilt_series : array, shape (n_angles, n_det, n_x)
        HAADF intensities at the chemical tilts.
    chem_tilt_series : array, shape (n_elements, n_angles, n_det, n_x)
        EDS counts per element, same tilts and pixels.

    Returns
    -------
    ResponseRatios
        ``ratios`` (n_elements,) and ``r_squared``.
    """
    haadf = _check_counts(_as_stack(haadf_tilt_series), "haadf_tilt_series")
    chem = _check_counts(_as_stack(chem_tilt_series), "chem_tilt_series")
    if chem.ndim != haadf.ndim + 1 or tuple(chem.shape[1:]) != tuple(haadf.shape):
        raise InputError(
            f"chem_tilt_series must have shape (n_elements,) + haadf shape "
            f"(n_elements, {', '.join(map(str, haadf.shape))}) — the same tilts and "
            f"pixels as the HAADF; got {tuple(chem.shape)}"
        )
    return _fit_response_ratios(
        np.asarray(backend.to_numpy(haadf), dtype=np.float64).ravel(),
        np.asarray(backend.to_numpy(chem), dtype=np.float64).reshape(chem.shape[0], -1),
    )


def _matching_tilts(haadf_projector: Projector, chem_projector: Projector) -> np.ndarray | None:
    """Index of each chemical tilt among the HAADF tilts, or None if one is missing."""
    haadf_angles = haadf_projector.angles_deg
    gap = np.abs(chem_projector.angles_deg[:, None] - haadf_angles[None, :])
    index = gap.argmin(axis=1)
    if np.any(gap[np.arange(index.size), index] > _ANGLE_MATCH_DEG):
        return None
    return index


def _ratio_fraction(value: Any, name: str) -> float:
    """α of Yuan 2021 eq. 17, strictly between 0 and 1."""
    return validation.number_in(
        value, name, 0.0, 1.0, high_open=True, why="strictly between 0 and 1: the HAADF weight of Yuan 2021 eq. 17"
    )


def hebt(
    haadf_projector: Projector,
    haadf_tilt_series: Any,
    chem_projector: Projector,
    chem_tilt_series: Any,
    *,
    alpha: float,
    n_iter: int = 200,
    response_ratios: Any = None,
    haadf_at_chem_tilts: Any = None,
    gaussian_sigma: float | None = 0.8,
    relaxation: float = 1.0,
    nonneg: bool = True,
    device: str | None = None,
    callback: Callback | None = None,
) -> Result:
    r"""Reconstruct all element maps jointly by HEBT with non-negative SIRT.

    Solves Yuan 2021 eq. 17 (see the module docstring for :math:`I^b, W^b`) by SIRT
    on the stacked operator:

    .. math::

        X^{b}_{m+1} = \max\bigl(0,\; X^b_m + \omega\, C\, W^{bT} R\,(I^b - W^b X^b_m)\bigr),

    with :math:`R` and :math:`C` the inverse row and column sums of :math:`W^b`. Each
    row of :math:`W^b` holds one block, scaled, of a projector row, so

    .. math::

        \text{rowsum}_{\text{chem}, A, i} = (1-\alpha) \sum_j (W_c)_{ij}, \qquad
        \text{rowsum}_{\text{HAADF}, i} = \alpha\, k \sum_j (W_h)_{ij},

        \text{colsum}_{A, j} = (1-\alpha) \sum_i (W_c)_{ij} + \alpha \sum_i (W_h)_{ij}

    (the HAADF row repeats :math:`\alpha W_h` for all k elements; column j of block A
    meets its own chemical rows and every HAADF row). Written out per element:

    .. math::

        X^b_A \mathrel{+}= \omega\,\frac{(1-\alpha) W_c^T R_c (r_A I_A - W_c X^b_A)
            + \alpha W_h^T R_h (I^H - W_h \sum_B X^b_B)/k}
            {(1-\alpha)\,\text{colsum}(W_c) + \alpha\,\text{colsum}(W_h)} .

    The element maps live side by side in one ``(n·n, n_el·n_x)`` matrix (layout
    ``(n_y, n_z, n_el, n_x)``), so one sparse-matrix product projects every element
    and slice. Weight fractions follow from eq. 18 with the factors :math:`z_A`:
    :func:`tomosweep.solvers.quantify.weight_fractions` (``factors=z``).

    Parameters
    ----------
    haadf_projector : Projector
        Geometry of the HAADF tilt series.
    haadf_tilt_series : array, shape (n_haadf_angles, n_det, n_x)
        HAADF intensities, non-negative.
    chem_projector : Projector
        Geometry of the EDS tilt series (same ``n`` and ``n_det``; any tilts).
    chem_tilt_series : array, shape (n_elements, n_chem_angles, n_det, n_x)
        EDS counts per element, non-negative.
    alpha : float
        HAADF weight α, strictly between 0 and 1 (Yuan 2021 found 0.7–0.8 best).
    n_iter : int
        SIRT iterations (a regulariser; Yuan 2021 used 100–500, more for larger α).
    response_ratios : sequence of float, optional
        :math:`r_A` per element, positive. Estimated from the data by
        :func:`response_ratios` when omitted, which needs the HAADF at the chemical
        tilts: taken from ``haadf_tilt_series`` when every chemical tilt is also a
        HAADF tilt, otherwise from ``haadf_at_chem_tilts``.
    haadf_at_chem_tilts : array, shape (n_chem_angles, n_det, n_x), optional
        HAADF projections recorded at the chemical tilts (e.g. the ADF frames taken
        with the spectrum images), used only to estimate the response ratios.
    gaussian_sigma : float or None
        Standard deviation (pixels) of the Gaussian filter applied to every EDS
        sinogram over its (angle, detector) axes before reconstruction and ratio
        estimation, as in Yuan 2021 §3.1.1 (σ = 0.8); None or 0 skips it. Applied on
        the CPU once (a preprocessing step), then moved to the compute device.
    relaxation : float
        ω in (0, 2).
    nonneg : bool
        Clip negative voxels to zero after every update (Yuan 2021 §2.1).
    device : {"cpu", "gpu", "auto"}, optional
        Where to compute; by default where ``chem_tilt_series`` lives.
    callback : callable, optional
        ``callback(k, costs, volume_matrix)``, ``volume_matrix`` being the iterate in
        the internal ``(n·n, n_el·n_x)`` layout; return True to stop.

    Returns
    -------
    Result
        ``volume`` of shape ``(n_elements, n_y, n_z, n_x)``: the maps
        :math:`X^b_A \propto z_A C_A \rho`. ``costs["data"]`` is the eq. 17 objective
        :math:`\lVert I^b - W^b X^b\rVert^2` (α-weighted) per iterate. ``info`` holds
        ``response_ratios`` (list), ``r_squared`` (None when the ratios were given and
        no HAADF at the chemical tilts was available), ``ratios_estimated``,
        ``alpha`` and ``gaussian_sigma``.
    """
    alpha = _ratio_fraction(alpha, "alpha")
    n_iter = validation.positive_int(n_iter, "n_iter", minimum=0)
    validation.relaxation(relaxation)
    sigma = (
        0.0 if gaussian_sigma is None else validation.positive_float(gaussian_sigma, "gaussian_sigma", allow_zero=True)
    )
    validation.same_projector_size(haadf_projector, chem_projector)

    xp = backend.choose_xp(chem_tilt_series, haadf_tilt_series, device=device)
    haadf, chem, n_el, n_x = _checked_series(haadf_tilt_series, chem_tilt_series, haadf_projector, chem_projector)
    chem_np = prefilter_chem(chem, sigma)
    haadf_matched = _haadf_at_chem(haadf, haadf_at_chem_tilts, haadf_projector, chem_projector, n_x)
    ratios, r_squared, estimated = _response_ratios(response_ratios, haadf_matched, chem_np)

    dtype = np.float64 if np.result_type(chem.dtype, haadf.dtype) == np.float64 else np.float32
    system = _StackedSystem(xp, dtype, haadf_projector, chem_projector, n_el, n_x, alpha)
    data = system.data(chem_np * ratios[:, None, None, None], haadf)
    log = CostLog("HEBT", callback)
    x, done = sirt_iterate(
        system.forward,
        system.back,
        data,
        system.inv_row,
        system.inv_col,
        xp.zeros((system.n_pix, n_el * n_x), dtype=dtype),
        n_iter=n_iter,
        relaxation=float(relaxation),
        nonneg=nonneg,
        log=log,
        xp=xp,
    )
    n = chem_projector.n
    volume = xp.ascontiguousarray(xp.moveaxis(x.reshape(n, n, n_el, n_x), 2, 0))
    return log.result(
        volume,
        done,
        backend.device_name(xp),
        response_ratios=[float(r) for r in ratios],
        r_squared=None if r_squared is None else float(r_squared),
        ratios_estimated=estimated,
        alpha=alpha,
        gaussian_sigma=sigma if sigma > 0 else None,
    )


def _checked_series(
    haadf_tilt_series: Any, chem_tilt_series: Any, haadf_projector: Projector, chem_projector: Projector
) -> tuple[Any, Any, int, int]:
    """The HAADF and chemical stacks checked against their projectors and each other."""
    haadf = _check_counts(_as_stack(haadf_tilt_series), "haadf_tilt_series")
    chem = _check_counts(_as_stack(chem_tilt_series), "chem_tilt_series")
    if chem.ndim != 4:
        raise InputError(
            f"chem_tilt_series must have shape (n_elements, n_angles, n_det, n_x); got {tuple(chem.shape)}"
        )
    n_el = int(chem.shape[0])
    if n_el < 1:
        raise InputError("chem_tilt_series holds no element")
    n_x = validation.tilt_series_shape(chem, chem_projector, "chem_tilt_series", lead=(n_el,))
    if validation.tilt_series_shape(haadf, haadf_projector, "haadf_tilt_series") != n_x:
        raise InputError(
            f"haadf_tilt_series has {haadf.shape[-1]} slices (n_x) but chem_tilt_series "
            f"has {n_x}; both must cover the same slices"
        )
    return haadf, chem, n_el, n_x


def _haadf_at_chem(
    haadf: Any, haadf_at_chem_tilts: Any, haadf_projector: Projector, chem_projector: Projector, n_x: int
) -> np.ndarray | None:
    """The HAADF paired with each chemical projection (given, or picked from a nested series), or None."""
    if haadf_at_chem_tilts is not None:
        matched = _check_counts(_as_stack(haadf_at_chem_tilts), "haadf_at_chem_tilts")
        validation.tilt_series_shape(matched, chem_projector, "haadf_at_chem_tilts")
        if matched.shape[-1] != n_x:
            raise InputError(f"haadf_at_chem_tilts has {matched.shape[-1]} slices but chem_tilt_series has {n_x}")
        return backend.to_numpy(matched)
    index = _matching_tilts(haadf_projector, chem_projector)
    return None if index is None else backend.to_numpy(haadf)[index]


def _response_ratios(
    given: Any, haadf_matched: np.ndarray | None, chem_np: np.ndarray
) -> tuple[np.ndarray, float | None, bool]:
    """``(ratios, R², estimated)``: eq. 15's regression, or the given ratios with their R² where it can be had."""
    n_el = chem_np.shape[0]
    if given is None:
        if haadf_matched is None:
            raise InputError(
                "estimating the response ratios needs the HAADF at the chemical tilts, but "
                "not every chemical tilt is a HAADF tilt; pass haadf_at_chem_tilts= (the "
                "HAADF projections at the chemical tilts) or response_ratios= (one per element)"
            )
        fit = _fit_response_ratios(np.asarray(haadf_matched, dtype=np.float64).ravel(), chem_np.reshape(n_el, -1))
        if not np.all(fit.ratios > 0):
            zero = np.flatnonzero(fit.ratios <= 0).tolist()
            raise InputError(
                f"the regression of the HAADF on the EDS signals gave a zero response ratio "
                f"for element(s) at index {zero}: their EDS signal does not help explain the "
                f"HAADF. Check the element list and the HAADF/EDS alignment, or pass "
                f"response_ratios= explicitly"
            )
        return fit.ratios, fit.r_squared, True
    try:
        ratios = np.asarray(backend.to_numpy(given), dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"response_ratios must be a sequence of numbers, got {given!r}") from None
    if ratios.shape != (n_el,):
        raise InputError(f"response_ratios must hold one value per element ({n_el}); got shape {ratios.shape}")
    if not np.all(np.isfinite(ratios)) or np.any(ratios <= 0):
        raise InputError(f"response_ratios must be finite and > 0, got {ratios.tolist()}")
    r_squared = None
    if haadf_matched is not None:
        h = np.asarray(haadf_matched, dtype=np.float64).ravel()
        resid = h - ratios @ chem_np.reshape(n_el, -1)
        ss_tot = float(((h - h.mean()) ** 2).sum())
        r_squared = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else None
    return ratios, r_squared, False


class _StackedSystem:
    """Eq. 17's stacked system ``[(1−α) W_c; α W_h Σ]`` with SIRT's row and column weights.

    Measurement space is one flat vector: the chemical block laid out (angle·det, el, x)
    as ``W_c @ X`` produces it, followed by the HAADF block (angle·det, x).
    """

    def __init__(
        self, xp: Any, dtype: Any, haadf_op: Projector, chem_op: Projector, n_el: int, n_x: int, alpha: float
    ) -> None:
        self.xp, self.dtype, self.haadf_op, self.chem_op = xp, dtype, haadf_op, chem_op
        self.n_el, self.n_x, self.alpha, self.keep = n_el, n_x, alpha, 1.0 - alpha
        self.n_pix = chem_op.shape[1]
        self.m_chem, self.m_haadf = chem_op.shape[0], haadf_op.shape[0]
        self.n_chem_rows = self.m_chem * n_el * n_x
        row_chem = chem_op.row_sums(xp, dtype) * self.keep
        row_haadf = haadf_op.row_sums(xp, dtype) * (alpha * n_el)
        self.inv_row = xp.concatenate(
            [xp.repeat(safe_inverse(xp, row_chem), n_el * n_x), xp.repeat(safe_inverse(xp, row_haadf), n_x)]
        )
        col = self.keep * chem_op.col_sums(xp, dtype) + alpha * haadf_op.col_sums(xp, dtype)
        self.inv_col = safe_inverse(xp, col)[:, None]

    def data(self, scaled_chem: np.ndarray, haadf: Any) -> Any:
        """The weighted measurements: ``(1−α) r_A I_A`` for every element, then ``α I^H``."""
        chem_block = np.moveaxis(scaled_chem, 0, 2).ravel()
        haadf_block = np.asarray(backend.to_numpy(haadf), dtype=np.float64).ravel()
        flat = np.concatenate([self.keep * chem_block, self.alpha * haadf_block])
        return backend.asarray(flat, self.xp, self.dtype)

    def forward(self, x: Any) -> Any:
        chem_proj = self.chem_op.forward_matrix(x)
        haadf_proj = self.haadf_op.forward_matrix(x.reshape(self.n_pix, self.n_el, self.n_x).sum(axis=1))
        return self.xp.concatenate([self.keep * chem_proj.ravel(), self.alpha * haadf_proj.ravel()])

    def back(self, y: Any) -> Any:
        out = self.chem_op.back_matrix(y[: self.n_chem_rows].reshape(self.m_chem, self.n_el * self.n_x))
        out *= self.keep
        haadf_back = self.haadf_op.back_matrix(y[self.n_chem_rows :].reshape(self.m_haadf, self.n_x))
        per_element = out.reshape(self.n_pix, self.n_el, self.n_x)
        per_element += self.alpha * haadf_back[:, None, :]
        return out
