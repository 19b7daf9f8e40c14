"""Population quantities in closed form (numpy, float64): Sigma, E[phi y], E[y^2] and the population loss.

The population loss of a model linear in its trained parameters a (notes Sec. 1),

    L(a) = E_x[(<a, phi(x)> - N*(x))^2] = a^T Sigma a - 2 a^T beta + E[y^2],
    Sigma = E[phi(x) phi(x)^T]  (m x m),   beta = E[phi(x) N*(x)]  (m,),   y = N*(x),

needs only second moments of the features and the teacher, E[f(x) g(x)]. For the input distributions of
``data.input_dist`` these have closed forms:

* ``gaussian`` x ~ N(0, I_d) and ``gaussian_scaled`` x ~ N(0, I_d / d): x ~ N(0, s2 I_d), s2 = 1 or 1/d.
* ``sphere``: x uniform on the unit sphere S^{d-1} (radius 1, so E[x x^T] = I_d / d as for
  ``gaussian_scaled``). For positively 1-homogeneous functions (relu(<u, x>), <u, x>) x = g / ||g|| with
  g ~ N(0, I_d) independent of ||g||, and E||g||^2 = d, give E_sphere[f g] = E_{N(0, I/d)}[f g] exactly.
  Fourier features use E_sphere[cos <w, x>] = Gamma(d/2) (2/r)^(d/2-1) J_{d/2-1}(r), r = ||w|| (Bessel).

Pairwise moments, for x ~ N(0, s2 I) (``kernel_matrix``):

* ReLU (arc-cosine kernel of degree 1, Cho & Saul 2009), t = angle(u, v):
  E[relu(<u, x>) relu(<v, x>)] = s2 ||u|| ||v|| (sin t + (pi - t) cos t) / (2 pi); on the diagonal s2 ||u||^2 / 2.
* ReLU against linear: E[relu(<u, x>) <v, x>] = s2 <u, v> / 2. Linear against linear: s2 <u, v>.
* Cosines: E[cos(<u, x> + b) cos(<v, x> + c)] = (psi(u - v) cos(b - c) + psi(u + v) cos(b + c)) / 2 with
  psi(w) = E[cos <w, x>] = exp(-s2 ||w||^2 / 2) (Gaussian) or the Bessel form above (sphere).
* Cosine against linear: E[cos(<u, x> + b) <v, x>] = -s2 <u, v> sin(b) exp(-s2 ||u||^2 / 2) (Gaussian only).

ReLU features against a Fourier teacher (and the reverse) have no closed form here: those runs keep a test set.

Everything is in the units of the labels squared (the population loss has no 1/2, notes Sec. 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

INPUT_DISTS = ("gaussian", "gaussian_scaled", "sphere")
# lambda_min(Sigma) from the closed form: dense eigvalsh up to DENSE_EIGEN_MAX_WIDTH features (seconds), then
# Lanczos on Sigma^{-1} through a Cholesky factor (m = 10^4: about 40 s and 0.8 GB on 2 cores), and not at all
# above SIGMA_EXACT_MAX_WIDTH.
DENSE_EIGEN_MAX_WIDTH = 3000
SIGMA_EXACT_MAX_WIDTH = 12000
_BLOCK = 2048  # rows of Sigma computed at a time: 2048 x m float64 (160 MB at m = 10^4)


def input_variance(dist: str, d: int) -> float:
    """s2 with E[x x^T] = s2 I_d: 1 for ``gaussian``, 1/d for ``gaussian_scaled`` and ``sphere`` (radius 1)."""
    if dist == "gaussian":
        return 1.0
    if dist in ("gaussian_scaled", "sphere"):
        return 1.0 / d
    raise ValueError(f"unknown input distribution {dist!r} (allowed: {INPUT_DISTS})")


def draw_inputs(dist: str, count: int, d: int, sample: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """``count`` inputs of ``dist`` from standard normals ``sample(count, d)`` (numpy helper for tests)."""
    g = sample(count, d)
    if dist == "gaussian":
        return g
    if dist == "gaussian_scaled":
        return g / math.sqrt(d)
    if dist == "sphere":
        return g / np.linalg.norm(g, axis=1, keepdims=True)
    raise ValueError(f"unknown input distribution {dist!r} (allowed: {INPUT_DISTS})")


def relu_kernel(u: np.ndarray, v: np.ndarray, s2: float = 1.0) -> np.ndarray:
    """E[relu(<u_i, x>) relu(<v_j, x>)] for x ~ N(0, s2 I) (or the unit sphere with s2 = 1/d): the degree-1
    arc-cosine kernel s2 ||u|| ||v|| (sin t + (pi - t) cos t) / (2 pi), t the angle between u_i and v_j.
    ``u`` (p, d), ``v`` (q, d); returns (p, q)."""
    nu = np.linalg.norm(u, axis=1)
    nv = np.linalg.norm(v, axis=1)
    outer = nu[:, None] * nv[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(outer > 0, (u @ v.T) / outer, 0.0)
    np.clip(cos, -1.0, 1.0, out=cos)
    t = np.arccos(cos)
    return s2 * outer * (np.sqrt(1.0 - cos * cos) + (math.pi - t) * cos) / (2 * math.pi)


def cos_characteristic(w_norm: np.ndarray, dist: str, d: int) -> np.ndarray:
    """psi(w) = E[cos <w, x>] as a function of r = ||w||: exp(-s2 r^2 / 2) for Gaussian inputs; for the unit
    sphere Gamma(d/2) (2/r)^(d/2-1) J_{d/2-1}(r) (the characteristic function of the uniform law on S^{d-1}),
    evaluated in logs to avoid overflow, with its Taylor series 1 - r^2/(2d) + r^4/(8 d (d+2)) near 0."""
    r = np.asarray(w_norm, dtype=np.float64)
    if dist != "sphere":
        return np.exp(-0.5 * input_variance(dist, d) * r * r)
    from scipy import special  # lazily: only the sphere needs Bessel functions

    nu = d / 2.0 - 1.0
    out = np.empty_like(r)
    small = r < 1e-3
    rs = r[small]
    out[small] = 1.0 - rs**2 / (2 * d) + rs**4 / (8 * d * (d + 2))
    rb = r[~small]
    jv = special.jv(nu, rb)
    with np.errstate(divide="ignore"):
        log_mag = special.gammaln(d / 2.0) + nu * np.log(2.0 / rb) + np.log(np.abs(jv))
    out[~small] = np.sign(jv) * np.exp(log_mag)
    return out


def cos_kernel(u: np.ndarray, bu: np.ndarray, v: np.ndarray, bv: np.ndarray, dist: str, d: int) -> np.ndarray:
    """E[cos(<u_i, x> + bu_i) cos(<v_j, x> + bv_j)] = (psi(u_i - v_j) cos(bu_i - bv_j) + psi(u_i + v_j)
    cos(bu_i + bv_j)) / 2, psi as in ``cos_characteristic``. Returns (p, q)."""
    uu = np.sum(u * u, axis=1)[:, None]
    vv = np.sum(v * v, axis=1)[None, :]
    uv = u @ v.T
    minus = cos_characteristic(np.sqrt(np.maximum(uu + vv - 2 * uv, 0.0)), dist, d)
    plus = cos_characteristic(np.sqrt(np.maximum(uu + vv + 2 * uv, 0.0)), dist, d)
    return 0.5 * (minus * np.cos(bu[:, None] - bv[None, :]) + plus * np.cos(bu[:, None] + bv[None, :]))


@dataclass
class Units:
    """A family of functions f_j(x) = amp * act(<w_j, x> + bias_j): ``act`` is relu, linear (identity) or cos."""

    act: str  # "relu" | "linear" | "cos"
    weight: np.ndarray  # (p, d)
    bias: np.ndarray | None = None  # (p,), cos only
    amp: float = 1.0

    def __len__(self) -> int:
        return self.weight.shape[0]

    def rows(self, sl: slice) -> Units:
        return Units(self.act, self.weight[sl], None if self.bias is None else self.bias[sl], self.amp)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The functions at inputs ``x`` (N, d): (N, p)."""
        pre = x @ self.weight.T
        if self.act == "relu":
            return self.amp * np.maximum(pre, 0.0)
        if self.act == "linear":
            return self.amp * pre
        return self.amp * np.cos(pre + self.bias)


def kernel_matrix(f: Units, g: Units, dist: str, d: int) -> np.ndarray:
    """E_x[f_i(x) g_j(x)] for every pair (the closed forms of the module docstring). Raises NotImplementedError
    for a pair without a closed form here (ReLU against cos; cos against linear on the sphere)."""
    s2 = input_variance(dist, d)
    amp = f.amp * g.amp
    pair = {f.act, g.act}
    if pair == {"relu"}:
        return amp * relu_kernel(f.weight, g.weight, s2)
    if pair == {"linear"}:
        return amp * s2 * (f.weight @ g.weight.T)
    if pair == {"relu", "linear"}:
        return amp * s2 * (f.weight @ g.weight.T) / 2
    if pair == {"cos"}:
        return amp * cos_kernel(f.weight, f.bias, g.weight, g.bias, dist, d)
    if pair == {"cos", "linear"} and dist != "sphere":
        c, lin = (f, g) if f.act == "cos" else (g, f)
        k = (
            -s2
            * (c.weight @ lin.weight.T)
            * (np.sin(c.bias) * cos_characteristic(np.linalg.norm(c.weight, axis=1), dist, d))[:, None]
        )
        return amp * (k if f.act == "cos" else k.T)
    raise NotImplementedError(f"no closed form for E[{f.act} {g.act}] under {dist} inputs")


@dataclass
class Teacher:
    """N*(x) = <coef, units(x)>: a sum of units (one unit for relu, linear and fourier teachers; the student's
    features with coef = theta* for the realizable ``student`` teacher); ``units`` None is the zero teacher."""

    units: Units | None
    coef: np.ndarray | None = None  # (p,)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.units is None:
            return np.zeros(x.shape[0])
        return self.units(x) @ self.coef


@dataclass
class FeatureMoments:
    """Second moments of features phi = ``features`` (m units) and a teacher under ``dist`` in R^d.

    Sigma is never stored whole unless asked for: ``sigma_times`` builds it ``_BLOCK`` rows at a time.
    """

    features: Units
    teacher: Teacher
    dist: str
    d: int

    @property
    def m(self) -> int:
        return len(self.features)

    def _blocks(self):
        for start in range(0, self.m, _BLOCK):
            sl = slice(start, min(self.m, start + _BLOCK))
            yield sl, kernel_matrix(self.features.rows(sl), self.features, self.dist, self.d)

    def sigma(self) -> np.ndarray:
        """Sigma = E[phi phi^T], (m, m)."""
        out = np.empty((self.m, self.m))
        for sl, blk in self._blocks():
            out[sl] = blk
        return out

    def sigma_times(self, q: np.ndarray) -> np.ndarray:
        """Sigma @ q for q (m, k), without holding Sigma."""
        out = np.empty((self.m, q.shape[1]))
        for sl, blk in self._blocks():
            out[sl] = blk @ q
        return out

    def cross(self) -> np.ndarray:
        """beta = E[phi(x) N*(x)], (m,)."""
        t = self.teacher
        if t.units is None:
            return np.zeros(self.m)
        if t.units is self.features:
            return self.sigma_times(t.coef[:, None])[:, 0]
        return kernel_matrix(self.features, t.units, self.dist, self.d) @ t.coef

    def target_second_moment(self) -> float:
        """E[N*(x)^2]."""
        t = self.teacher
        if t.units is None:
            return 0.0
        if t.units is self.features:
            return float(t.coef @ self.sigma_times(t.coef[:, None])[:, 0])
        return float(t.coef @ kernel_matrix(t.units, t.units, self.dist, self.d) @ t.coef)

    def loss(self, a: np.ndarray) -> np.ndarray:
        """L(a) = a^T Sigma a - 2 a^T beta + E[y^2] for a (m,) or for each column of a (m, k)."""
        a2 = a[:, None] if a.ndim == 1 else a
        sa = self.sigma_times(a2)
        out = np.sum(a2 * sa, axis=0) - 2 * (self.cross() @ a2) + self.target_second_moment()
        return out[0] if a.ndim == 1 else out


def sigma_min(
    moments: FeatureMoments,
    dense_max_width: int = DENSE_EIGEN_MAX_WIDTH,
    max_width: int = SIGMA_EXACT_MAX_WIDTH,
) -> tuple[float | None, str]:
    """lambda_min(Sigma) from the closed-form Sigma, and how it was computed (None when m > ``max_width``).

    m <= ``dense_max_width``: numpy.linalg.eigvalsh of the dense Sigma (exact to rounding, about 1e-16 times
    lambda_max). Up to ``max_width``: Lanczos (scipy eigsh) for the largest eigenvalue of Sigma^{-1}, applied
    through a Cholesky factor (O(m^3 / 3) flops, 8 m^2 bytes); when Sigma is singular to rounding the
    factorization fails and lambda_min is reported as 0 (below about 1e-15 lambda_max)."""
    m = moments.m
    if m > max_width:
        return None, f"not computed (m = {m} > {max_width}: Sigma would take {8 * m * m / 2**30:.1f} GiB)"
    sig = moments.sigma()
    if m <= dense_max_width:
        return max(0.0, float(np.linalg.eigvalsh(sig)[0])), "exact (closed-form Sigma, eigvalsh)"
    from scipy.linalg import LinAlgError, cho_factor, cho_solve
    from scipy.sparse.linalg import LinearOperator, eigsh

    try:
        factor = cho_factor(sig, lower=True, overwrite_a=True, check_finite=False)
    except LinAlgError:
        return 0.0, "exact (closed-form Sigma singular to rounding: Cholesky failed)"
    op = LinearOperator((m, m), matvec=lambda v: cho_solve(factor, v, check_finite=False), dtype=np.float64)
    top = float(eigsh(op, k=1, which="LA", tol=1e-10, return_eigenvectors=False)[0])
    return 1.0 / top, "exact (closed-form Sigma, Lanczos on its inverse)"


def population_rows(moments: FeatureMoments, basis: np.ndarray, rtol: float = 1e-13) -> tuple[np.ndarray, np.ndarray]:
    """An equivalent 'test set' in feature space: rows P (K, m) and targets r (K,), K = basis.shape[1] + 1, with

        mean_i (P_i a - r_i)^2 = a^T Sigma a - 2 a^T beta + E[y^2] = L(a)   for every a in span(basis),

    exactly (to rounding). With Q an orthonormal basis of span(basis), G = Q^T Sigma Q = U diag(l) U^T and
    g = Q^T beta: P = sqrt(K) [diag(sqrt l) U^T Q^T; 0], r = sqrt(K) [diag(1/sqrt l) U^T g;
    sqrt(E[y^2] - ||diag(1/sqrt l) U^T g||^2)]; the last row carries the part of the teacher no a in the
    span reaches. Directions with l <= rtol * max(l) (Sigma numerically singular there) get zero rows, so
    K depends only on the basis' width and several runs' rows stack.

    GD with weight decay from theta^(0) stays in span(Phi^T, theta^(0)) (Eq. 2), so that basis makes the
    population loss of the GD iterates exact at every step."""
    return population_rows_batch(moments, [basis], rtol)[0]


def population_rows_batch(
    moments: FeatureMoments, bases: list[np.ndarray], rtol: float = 1e-13
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``population_rows`` for several bases of one feature map and teacher (e.g. the training sets of several
    n): Sigma's blocks, the O(m^2 d) part, are computed once for all of them (one ``sigma_times`` call on the
    bases side by side). Returns one (rows, targets) pair per basis, each equal to ``population_rows``'."""
    qs = [np.linalg.qr(b)[0] for b in bases]
    sq_all = moments.sigma_times(np.hstack(qs))
    beta, ey2 = moments.cross(), moments.target_second_moment()
    out = []
    start = 0
    for q in qs:
        sq = sq_all[:, start : start + q.shape[1]]
        start += q.shape[1]
        g_mat = q.T @ sq
        g_mat = (g_mat + g_mat.T) / 2
        lam, u = np.linalg.eigh(g_mat)
        keep = lam > rtol * max(lam[-1], 1e-300)
        root = np.sqrt(np.where(keep, lam, 1.0))
        r = np.where(keep, (u.T @ (q.T @ beta)) / root, 0.0)
        rest = max(0.0, ey2 - float(r @ r))
        k = q.shape[1] + 1
        rows = np.vstack([(np.where(keep, root, 0.0)[:, None] * u.T) @ q.T, np.zeros((1, q.shape[0]))]) * math.sqrt(k)
        targets = np.concatenate([r, [math.sqrt(rest)]]) * math.sqrt(k)
        out.append((rows, targets))
    return out


def two_layer_population_loss(
    weight: np.ndarray, a: np.ndarray, teacher: Teacher, dist: str = "gaussian"
) -> np.ndarray:
    """L(W, a) = E_x[(sum_j a_j relu(<w_j, x>) - N*(x))^2] of the two-layer ReLU network (Sec. 5.3) at the
    current W (m, d) and a (m,) or (m, k): the arc-cosine expression a^T K(W, W) a - 2 a^T K(W, teacher) c*
    + E[y^2]. Costs O(m^2 d), like a test set of m points; exact for ``gaussian``, ``gaussian_scaled`` and
    ``sphere`` inputs with a zero, linear or relu teacher."""
    d = weight.shape[1]
    moments = FeatureMoments(Units("relu", weight), teacher, dist, d)
    return moments.loss(a)


def standard_error(squared_errors: np.ndarray) -> float:
    """Standard error of a test-set population loss: std of the N per-point squared errors / sqrt(N) (the
    loss is their mean). Units of the loss."""
    e = np.asarray(squared_errors, dtype=np.float64).ravel()
    if e.size < 2:
        return math.nan
    return float(np.std(e, ddof=1) / math.sqrt(e.size))


def test_set_standard_error(phi_test: np.ndarray, y_test: np.ndarray, theta: np.ndarray) -> float:
    """``standard_error`` of the test-set loss mean_i ||phi_i^T theta - y_i||^2 at parameters theta (m, k)."""
    err = np.sum((phi_test @ theta - y_test) ** 2, axis=1)
    return standard_error(err)
