r"""Gaussian-process regression and the acquisition functions of the searches.

The regression is scikit-learn's :class:`~sklearn.gaussian_process.GaussianProcessRegressor`
(hyper-parameters by maximum likelihood with L-BFGS-B restarts), on a kernel with a
:class:`~sklearn.gaussian_process.kernels.WhiteKernel` for the noise of the objective, targets
standardised. A prediction is the posterior of the *noise-free* function (Rasmussen & Williams
2006, eq. 2.24: the noise enters the training covariance, not the test point's variance), so
a point already evaluated still has a small uncertainty rather than the noise level.

The acquisitions, written for minimisation with :math:`z = (y^* - \xi - \mu) / \sigma`
(Brochu, Cora & de Freitas 2010, §2.3):

- expected improvement :math:`\mathrm{EI} = (y^* - \xi - \mu)\,\Phi(z) + \sigma\,\varphi(z)`;
- probability of improvement :math:`\mathrm{PI} = \Phi(z)`;
- lower confidence bound :math:`\mathrm{LCB} = \mu - \kappa\sigma`;

with the constants of the GP-Hedge paper's setting as scikit-optimize used them
(:math:`\xi = 0.01`, :math:`\kappa = 1.96`). Each is turned into a value to *minimise* (−EI, LCB,
−PI) and optimised over the unit box: the best of many random candidates, refined by L-BFGS-B
from the best few (finite-difference gradients; the box has a handful of dimensions).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ACQ_FUNCS = ("EI", "LCB", "PI")
XI, KAPPA = 0.01, 1.96
N_RESTARTS = 5  # L-BFGS-B runs from the best candidates
MARGIN = 0.02  # L-BFGS-B stays this far inside the [0, 1] box

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def cell_kernel(n_dims: int) -> Any:
    """One cell's kernel: amplitude × Matern 5/2 with one length scale per weight, plus noise
    (the kernel scikit-optimize's ``cook_estimator("GP")`` built, and the bounds it used)."""
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    return ConstantKernel(1.0, (0.01, 1000.0)) * Matern(
        length_scale=np.ones(n_dims),  # pyright: ignore[reportArgumentType]
        length_scale_bounds=[(0.01, 100.0)] * n_dims,
        nu=2.5,
    ) + WhiteKernel(1.0, (1e-5, 1e5))


class GaussianProcess:
    """A GP fitted on unit-box inputs: its posterior mean and standard deviation of the noise-free
    objective (module docstring).

    Parameters
    ----------
    kernel
        A scikit-learn kernel whose last term is a ``WhiteKernel`` (``signal + noise``).
    seed : int
        Seeds the restarts of the hyper-parameter search.
    restarts : int
        Extra L-BFGS-B runs of that search from random hyper-parameters.
    optimise : bool
        False: the kernel's hyper-parameters are taken as they are (one Cholesky factorisation).
    """

    def __init__(self, kernel: Any, *, seed: int, restarts: int = 2, optimise: bool = True) -> None:
        self.kernel = kernel
        self.seed = int(seed)
        self.restarts = int(restarts)
        self.optimise = bool(optimise)
        self._model: Any = None
        self._mean, self._scale = 0.0, 1.0

    def fit(self, X: np.ndarray, y: Sequence[float] | np.ndarray) -> GaussianProcess:
        """Fit on inputs ``X`` ``(n, d)`` and targets ``y`` (standardised here)."""
        from sklearn.gaussian_process import GaussianProcessRegressor  # deferred: scikit-learn is slow to import

        targets = np.asarray(y, dtype=float)
        self._mean = float(targets.mean())
        scale = float(targets.std())
        self._scale = scale if scale > 0 else 1.0
        model = GaussianProcessRegressor(
            kernel=self.kernel,
            normalize_y=False,
            n_restarts_optimizer=self.restarts if self.optimise else 0,
            optimizer="fmin_l_bfgs_b" if self.optimise else None,  # pyright: ignore[reportArgumentType]  (None: held)
            random_state=self.seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hyper-parameter convergence notes are expected on small, noisy data
            model.fit(np.asarray(X, dtype=float), (targets - self._mean) / self._scale)
        self._model = model
        return self

    @property
    def theta(self) -> list[float]:
        """The fitted log hyper-parameters (signal terms, then the log noise level)."""
        return [float(v) for v in self._model.kernel_.theta]

    @property
    def likelihood(self) -> float:
        """The log marginal likelihood of the fitted hyper-parameters."""
        return float(self._model.log_marginal_likelihood_value_)

    @property
    def signal(self) -> Any:
        """The fitted kernel without its noise term."""
        return self._model.kernel_.k1

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the noise-free objective at ``X`` ``(n, d)``."""
        from scipy.linalg import solve_triangular

        X = np.atleast_2d(np.asarray(X, dtype=float))
        model = self._model
        cross = self.signal(X, model.X_train_)
        mean = cross @ model.alpha_
        v = solve_triangular(model.L_, cross.T, lower=True, check_finite=False)
        var = self.signal.diag(X) - np.einsum("ij,ij->j", v, v)
        std = np.sqrt(np.clip(var, 0.0, None))
        return mean * self._scale + self._mean, std * self._scale

    def mean(self, X: np.ndarray) -> np.ndarray:
        """Posterior mean at ``X``."""
        return self.predict(X)[0]


def acquisition(name: str, mean: np.ndarray, std: np.ndarray, y_opt: float) -> np.ndarray:
    """The acquisition ``name`` (``EI``, ``LCB``, ``PI``) as a value to minimise: −EI, LCB, −PI
    (module docstring); where σ = 0, EI and PI are 0."""
    if name == "LCB":
        return mean - KAPPA * std
    value = np.zeros_like(mean)
    mask = std > 0
    if np.any(mask):
        from scipy.stats import norm  # deferred: scipy.stats is slow to import

        improve = y_opt - XI - mean[mask]
        z = improve / std[mask]
        value[mask] = norm.cdf(z) if name == "PI" else improve * norm.cdf(z) + std[mask] * norm.pdf(z)
    return -value


def expected_improvement(predict: Predict, x: np.ndarray, y_opt: float) -> float:
    """EI (without ξ) at one unit point: what a cell can still expect to gain there."""
    mean, std = predict(np.atleast_2d(x))
    if float(std[0]) <= 0:
        return max(y_opt - float(mean[0]), 0.0)
    # the acquisition's EI, its ξ cancelled
    return float(-acquisition("EI", mean[:1], std[:1], y_opt + XI)[0])


def minimise_acquisition(
    name: str,
    predict: Predict,
    y_opt: float,
    candidates: np.ndarray,
    is_taken: Callable[[np.ndarray], bool],
    *,
    lbfgs: bool,
) -> np.ndarray | None:
    """The unit point that minimises acquisition ``name`` and is not taken, or None.

    The candidates are ranked by the acquisition; with ``lbfgs``, L-BFGS-B refines the best
    ``N_RESTARTS`` of them, ``MARGIN`` inside the box (on its faces the GP's variance, and with
    it LCB and EI, grows only because no data lie beyond them).
    """

    def values(X: np.ndarray) -> np.ndarray:
        mean, std = predict(X)
        return acquisition(name, mean, std, y_opt)

    order = np.argsort(values(candidates))
    if lbfgs:
        from scipy.optimize import fmin_l_bfgs_b  # deferred: scipy.optimize is slow to import

        bounds = [(MARGIN, 1.0 - MARGIN)] * candidates.shape[1]
        runs = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for x0 in candidates[order[:N_RESTARTS]]:
                start = np.clip(x0, MARGIN, 1.0 - MARGIN)
                x, f, _ = fmin_l_bfgs_b(
                    lambda x: float(values(x[None, :])[0]), start, approx_grad=True, bounds=bounds, maxiter=20
                )
                runs.append((float(f), np.clip(x, MARGIN, 1.0 - MARGIN)))
        for _, x in sorted(runs, key=lambda r: r[0]):
            if not is_taken(x):
                return x
    for index in order:
        if not is_taken(candidates[index]):
            return candidates[index]
    return None


def stored_theta(raw: Any, bounds: np.ndarray | None) -> list[float] | None:
    """Stored log hyper-parameters: finite numbers, each within (a little beyond) its kernel's
    ``bounds`` when their lengths agree; None when there are none (a ``ValueError`` otherwise)."""
    if raw is None:
        return None
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise ValueError(f"stored GP hyper-parameters must be a list of numbers, got {str(raw)[:80]!r}")
    if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in raw):
        raise ValueError(f"stored GP hyper-parameters must be finite numbers, got {str(raw)[:80]}")
    theta = [float(v) for v in raw]
    if bounds is not None and len(theta) == len(bounds):
        slack = 2.0  # log units: a value this far beyond its kernel's bounds was not fitted here
        for k, (v, (lo, hi)) in enumerate(zip(theta, bounds, strict=True)):
            if not lo - slack <= v <= hi + slack:
                raise ValueError(
                    f"stored GP hyper-parameter {k} is {v:g}, far outside its kernel's bounds "
                    f"({lo:.3g} to {hi:.3g} in log units)"
                )
    return theta
