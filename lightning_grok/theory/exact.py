"""Closed-form GD dynamics for models linear in their parameters (notes Sec. 1, "key mechanism").

GD with weight decay (Eq. 2) on (1/2n)||Phi theta - Y||^2 + (lambda/2)||theta||^2 is the affine map
theta <- (I - eta Gamma) theta + (eta/n) Phi^T Y with Gamma = Phi^T Phi / n + lambda I. With the thin SVD
Phi = U S V^T (s_j = S_j^2 / n the eigenvalues of Phi^T Phi / n) and the ridge solution theta*_lambda:

  V^T (theta_t - theta*_lambda) = diag(rho_j^t) V^T (theta_0 - theta*_lambda),  rho_j = 1 - eta (s_j + lambda)
  P_null theta_t                = rho_0^t P_null theta_0,                      rho_0 = 1 - eta lambda

so the training loss and the population loss are finite sums of exponentials in t: evaluating them at
any step costs O(rank) (exact Sigma = sigma I) or O(rank^2) (a test set), never O(t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightning_grok.theory.grid import HORIZON_EFOLDS, MAX_HORIZON_STEPS, step_grid


@dataclass
class LinearProblem:
    """One run of a linear-in-parameters model, in feature space and float64 (the tensors it trains on)."""

    phi: np.ndarray  # (n, m) training features
    y: np.ndarray  # (n, k) training labels (noisy if label noise)
    theta0: np.ndarray  # (m, k) initialization
    lr: float  # eta
    weight_decay: float  # lambda
    theta0_variance: float  # nu^2 of the trained parameters' initialization
    theta_star: np.ndarray | None = None  # (m, k) teacher in feature space, when realizable
    sigma_scale: float | None = None  # Sigma = sigma_scale * I exactly
    phi_test: np.ndarray | None = None  # (N, m) test features (population loss sampled or finite table)
    y_test: np.ndarray | None = None  # (N, k) noise-free teacher values
    sigma_min: float | None = None  # lambda_min(Sigma), exact or estimated
    sigma_min_source: str = "unknown"  # "exact", "finite population", "estimated from N samples", ...
    gaussian_identity: bool = False
    noise_free: bool = True
    b2: float | None = None  # sup ||phi(x)||^2 estimate
    realizability_residual: float | None = None  # finite population: ||Phi_all theta* - Y_all|| / ||Y_all||

    @property
    def n(self) -> int:
        return self.phi.shape[0]

    @property
    def m(self) -> int:
        return self.phi.shape[1]

    @property
    def realizable(self) -> bool:
        return self.theta_star is not None and self.noise_free


def _powers(log_abs: np.ndarray, negative: np.ndarray, t: np.ndarray) -> np.ndarray:
    """rho^t for every (t, mode), from log|rho| and the sign of rho; shape (len(t), modes)."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    out = np.exp(t * log_abs[None, :])
    if negative.any():
        odd = np.asarray(t, dtype=np.int64) % 2 == 1
        out = np.where(negative[None, :] & odd, -out, out)
    return out


def _log_abs_rate(step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log|1 - step| computed without cancellation, and whether 1 - step < 0."""
    step = np.asarray(step, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_abs = np.where(step < 1, np.log1p(-np.minimum(step, 1 - 1e-300)), np.log(np.abs(step - 1)))
    return log_abs, step > 1


class ExactDynamics:
    """Exact training loss, population loss and parameters of GD at any step t (no iteration)."""

    def __init__(self, problem: LinearProblem, rank_tol: float | None = None):
        p = self.problem = problem
        phi, y, eta, lam = p.phi, p.y, p.lr, p.weight_decay
        n, m = phi.shape
        u, s_vals, vt = np.linalg.svd(phi, full_matrices=False)
        self.spectrum = s_vals  # every singular value of Phi, descending (the bounds' Quantities reuse them)
        tol = (
            rank_tol
            if rank_tol is not None
            else max(n, m) * np.finfo(np.float64).eps * (s_vals[0] if len(s_vals) else 0)
        )
        keep = s_vals > tol
        u, s_vals, v = u[:, keep], s_vals[keep], vt[keep].T
        self.singular_values = s_vals
        self.eigenvalues = s_vals**2 / n  # eigenvalues s_j of Phi^T Phi / n
        self.rank = int(keep.sum())
        y_coef = u.T @ y  # (r, k)
        y_perp = y - u @ y_coef
        self._train_const = float(np.sum(y_perp**2))
        # ridge solution in row-space coordinates: w_j = S_j/n * u_j^T Y / (s_j + lambda)
        denom = self.eigenvalues + lam
        if np.any(denom <= 0):
            raise ValueError("weight_decay = 0 with a zero eigenvalue: no unique fixed point")
        w = (s_vals / n)[:, None] * y_coef / denom[:, None]
        a0 = v.T @ p.theta0
        c = a0 - w  # (r, k) transient coefficients
        self._w, self._c, self._v = w, c, v
        self.theta_ridge = v @ w  # theta*_lambda, (m, k)
        self.theta0_null = p.theta0 - v @ a0
        # training residual in U coordinates: e_j(t) = beta_j + alpha_j rho_j^t
        self._beta = s_vals[:, None] * w - y_coef
        self._alpha = s_vals[:, None] * c
        self._log_rho, self._neg_rho = _log_abs_rate(eta * denom)
        log0, neg0 = _log_abs_rate(np.array([eta * lam]))
        self._log_rho0, self._neg_rho0 = log0, neg0
        self._setup_population()

    # ---- population loss as a quadratic form in z(t) = [1, rho_1^t..rho_r^t, rho_0^t] -------------
    def _setup_population(self) -> None:
        p = self.problem
        v, c = self._v, self._c
        if p.sigma_scale is not None and p.theta_star is not None:
            # Sigma = sigma I: ||theta_t - theta*||^2 splits into row space and null space exactly
            d = self.theta_ridge - p.theta_star
            d_row = v.T @ d
            d_null = d - v @ d_row
            self._pop_kind = "exact"
            self._pop = (
                p.sigma_scale,
                d_row,
                c,
                float(np.sum(d_null**2)),
                float(np.sum(d_null * self.theta0_null)),
                float(np.sum(self.theta0_null**2)),
            )
        elif p.phi_test is not None and p.y_test is not None:
            n_test = p.phi_test.shape[0]
            base = p.phi_test @ self.theta_ridge - p.y_test  # (N, k)
            g = p.phi_test @ v  # (N, r)
            h = p.phi_test @ self.theta0_null  # (N, k)
            # <B_a, B_b> with B_j = g_j c_j (outer product): <g_i c_i, g_j c_j> = (g_i.g_j)(c_i.c_j)
            gram_g = g.T @ g
            cc = c @ c.T
            r = self.rank
            gmat = np.empty((r + 2, r + 2))
            gmat[0, 0] = np.sum(base * base)
            gmat[0, 1 : r + 1] = np.einsum("nr,rk,nk->r", g, c, base)
            gmat[0, r + 1] = np.sum(base * h)
            gmat[1 : r + 1, 1 : r + 1] = gram_g * cc
            gmat[1 : r + 1, r + 1] = np.einsum("nr,rk,nk->r", g, c, h)
            gmat[r + 1, r + 1] = np.sum(h * h)
            gmat = np.triu(gmat) + np.triu(gmat, 1).T
            self._pop_kind = "test"
            self._pop = gmat / n_test
        else:
            self._pop_kind = None

    @property
    def has_population(self) -> bool:
        return self._pop_kind is not None

    def train_loss(self, t) -> np.ndarray:
        """L_n(theta_t) = (1/2n) ||Phi theta_t - Y||^2 (Eq. 1, no weight-decay term)."""
        t = np.atleast_1d(np.asarray(t))
        return self._train_loss(_powers(self._log_rho, self._neg_rho, t))

    def _train_loss(self, pw: np.ndarray) -> np.ndarray:
        """``train_loss`` from the powers rho_j^t (T, r)."""
        e = self._beta[None, :, :] + self._alpha[None, :, :] * pw[:, :, None]
        return (np.sum(e**2, axis=(1, 2)) + self._train_const) / (2 * self.problem.n)

    def population_loss(self, t) -> np.ndarray:
        """L(theta_t) = E[(N(x; theta_t) - N*(x))^2]: exact (Sigma = sigma I) or over the test set."""
        if self._pop_kind is None:
            raise ValueError("this problem has neither an exact Sigma with a realizable teacher nor a test set")
        t = np.atleast_1d(np.asarray(t))
        pw = _powers(self._log_rho, self._neg_rho, t)
        return self._population_loss(pw, _powers(self._log_rho0, self._neg_rho0, t)[:, 0])

    def _population_loss(self, pw: np.ndarray, p0: np.ndarray) -> np.ndarray:
        """``population_loss`` from the powers rho_j^t (T, r) and rho_0^t (T,)."""
        if self._pop_kind == "exact":
            sigma, d_row, c, dn2, dn_t0, t0n2 = self._pop
            row = np.sum((d_row[None] + c[None] * pw[:, :, None]) ** 2, axis=(1, 2))
            null = dn2 + 2 * p0 * dn_t0 + p0**2 * t0n2
            return sigma * (row + null)
        z = np.concatenate([np.ones((len(p0), 1)), pw, p0[:, None]], axis=1)
        return np.einsum("ta,ab,tb->t", z, self._pop, z, optimize=True)

    def theta(self, t: int) -> np.ndarray:
        """theta_t itself, (m, k)."""
        pw = _powers(self._log_rho, self._neg_rho, np.array([t]))[0]
        p0 = _powers(self._log_rho0, self._neg_rho0, np.array([t]))[0, 0]
        return self.theta_ridge + self._v @ (self._c * pw[:, None]) + p0 * self.theta0_null

    # ---- exact phase times --------------------------------------------------------------------
    def horizon(self) -> int:
        """A step after which every transient has decayed by e^-HORIZON_EFOLDS (capped at MAX_HORIZON_STEPS)."""
        slowest = max(np.max(self._log_rho, initial=-np.inf), self._log_rho0[0])
        if slowest >= 0:
            return MAX_HORIZON_STEPS
        return int(min(MAX_HORIZON_STEPS, np.ceil(HORIZON_EFOLDS / -slowest) + 1))

    def _grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The search grid and the powers rho_j^t (T, r) and rho_0^t (T,) on it."""
        grid = step_grid(self.horizon())
        return grid, _powers(self._log_rho, self._neg_rho, grid), _powers(self._log_rho0, self._neg_rho0, grid)[:, 0]

    def phase_times(self, eps: float, c: float) -> tuple[int | None, int | None]:
        """(t1(eps), t2(c)), the powers on the grid computed once for both; t2 None without a population loss."""
        on_grid = self._grid()
        return self.t_overfit(eps, on_grid), self.t_generalize(c, on_grid) if self.has_population else None

    def t_generalize(self, c: float, on_grid: tuple | None = None) -> int | None:
        """t2(c) = min{t : L(theta_t) <= c}; None if never (Sec. 2). ``on_grid``: ``_grid()`` if computed."""
        if self._pop_kind is None:
            raise ValueError("this problem has neither an exact Sigma with a realizable teacher nor a test set")
        grid, pw, p0 = on_grid or self._grid()
        return _first_crossing(self.population_loss, c, grid, self._population_loss(pw, p0))

    def t_overfit(self, eps: float, on_grid: tuple | None = None) -> int | None:
        """t1(eps) = max{t : L_n(theta_t) >= eps}; None if the loss stays >= eps forever or starts below."""
        grid, pw, _ = on_grid or self._grid()
        vals = self._train_loss(pw)
        above = np.nonzero(vals >= eps)[0]
        if len(above) == 0 or above[-1] == len(grid) - 1:
            return None
        lo, hi = int(grid[above[-1]]), int(grid[above[-1] + 1])
        while hi - lo > 1:  # last t >= eps, assuming one crossing inside a 0.4% bracket
            mid = (lo + hi) // 2
            if self.train_loss(mid)[0] >= eps:
                lo = mid
            else:
                hi = mid
        return lo


def _first_crossing(f, level: float, grid: np.ndarray, vals: np.ndarray) -> int | None:
    """The first t with f(t) <= level, from f's values ``vals`` on ``grid`` and bisection inside the bracket."""
    below = np.nonzero(vals <= level)[0]
    if len(below) == 0:
        return None
    j = below[0]
    if j == 0:
        return int(grid[0])
    lo, hi = int(grid[j - 1]), int(grid[j])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f(mid)[0] <= level:
            hi = mid
        else:
            lo = mid
    return hi
