"""Floating-point soundness: the outward margins every computed bound receives.

Model: IEEE float64, round to nearest, unit roundoff ``u = 2**-53``. A dot product of n terms
computed in any order (BLAS blocking and FMA included) satisfies
``|fl(a . b) - a . b| <= gamma_n |a| . |b|`` with ``gamma_n = n u / (1 - n u)`` (Higham, Accuracy
and Stability of Numerical Algorithms, 3.1).

Where the margins are applied:

* IBP (``interval.py``): an affine op maps the centre ``mu`` and radius ``r`` of its input box
  (with ``[mu - r, mu + r]`` containing the box exactly: ``r`` is rounded up) to
  ``c = fl(M mu + b)``, ``rho = fl(|M| r)`` and the magnitude ``s = fl(|M| (|mu| + r) + |b|)``;
  the output interval is ``c -/+ (rho + 4 gamma s)`` rounded outward (``down``/``up``).
  Monotone elementwise ops evaluate the ends and round outward (``kernels.sshape`` for
  transcendental ones, with their libm error).
* CROWN (``backward.py``): every backward step replaces the coefficient ``A`` of a value by
  computed coefficients of its inputs and a computed constant. The invariant kept is exact:
  ``C y - d >= A_v . v + const - err`` for the computed A_v, const; each step's error is at most
  gamma_N times its magnitude ``|A_out| . w`` where ``w`` bounds ``|M| |x| + |b|`` elementwise
  (for an affine op, ``w = |M| vmax + |b|`` with ``vmax`` the largest magnitude of the input
  over its bounds; for a relaxation line, ``|A k| vmax + |A t|``; at the input box,
  ``|A| max(|l|, |u|)``). The magnitudes are summed along the pass (``mag``), and the bound is
  ``const + concretisation - MARGIN_FACTOR * gamma_N * mag``, rounded down. N (the
  plan's ``n_terms``) exceeds the longest dot product, the fan-in of any accumulation and the
  number of steps, so the factor 4 covers (i) the steps' own errors, (ii) the errors of summing
  contributions and constants along the pass, and (iii) the rounding of ``mag`` itself.
* Relaxation lines are themselves valid in exact arithmetic: slopes anchored at an end point are
  rounded in the safe direction (``kernels.activation.UP``), sigmoid/tanh/softplus intercepts are
  computed with an explicit error bound (``kernels.sshape``); an intercept's own rounding is part
  of ``mag``.
"""
import numpy as np

U = 2.0 ** -53
#: multiple of gamma_N applied to the accumulated magnitude (see the module docstring)
MARGIN_FACTOR = 4.0


def gamma(n: int) -> float:
    """``gamma_n = n u / (1 - n u)``, the relative error bound of an n-term dot product."""
    nu = n * U
    if nu >= 0.5:
        raise ValueError(f"gamma_{n} is not small: dot products of {n} terms are out of range")
    return nu / (1.0 - nu)


#: relative and absolute steps of ``down``/``up``: 2**-51 |x| exceeds the rounding error of the
#: operation that produced x (at most 2**-53 |exact|) plus that of the step itself, and 2**-1073
#: covers results in the subnormal range, so ``down(fl(e)) <= e <= up(fl(e))``.
STEP_REL = 2.0 ** -51
STEP_ABS = 2.0 ** -1073


def down(x: np.ndarray) -> np.ndarray:
    """A value below the exact result ``e`` of the last rounded operation that gave ``x``
    (``x - (2**-51 |x| + 2**-1073)``, a few vectorised operations instead of ``nextafter``;
    infinities are kept)."""
    return np.fmin(x, x - (np.abs(x) * STEP_REL + STEP_ABS))


def up(x: np.ndarray) -> np.ndarray:
    """A value above the exact result of the last rounded operation that gave ``x``."""
    return np.fmax(x, x + (np.abs(x) * STEP_REL + STEP_ABS))


#: smallest nonzero radius ``centre_radius`` returns: a radius in (or near) the subnormal range
#: makes its products with weights subnormal, which x86 CPUs compute about 100 times slower
#: (``up(0) = 2**-1073`` on the many ReLU outputs pinned at [0, 0] made IBP ten times slower)
R_MIN = 2.0 ** -600


def centre_radius(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mu = (lo + hi) / 2`` and ``r`` with ``[mu - r, mu + r]`` containing ``[lo, hi]`` exactly
    (the larger of the two computed half-widths, rounded up by one ulp). A radius below
    ``R_MIN`` becomes 0 where ``lo == hi`` (then ``mu = lo`` exactly: ``lo + hi = 2 lo`` and the
    halving are exact) and ``R_MIN`` elsewhere (a larger radius still contains the interval)."""
    mu = 0.5 * (lo + hi)
    r = up(np.maximum(hi - mu, mu - lo))
    r = np.where(r < R_MIN, np.where(lo == hi, 0.0, R_MIN), r)
    return mu, r


def vmax(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Largest magnitude ``max(|lo|, |hi|)`` of a value over its bounds (exact)."""
    return np.maximum(np.abs(lo), np.abs(hi))
