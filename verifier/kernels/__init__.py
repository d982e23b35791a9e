"""Numba-jitted hot loops of the bound methods (``njit(cache=True)``, never ``fastmath``).

Every kernel is small, typed by its docstring, and tested against a plain numpy reference of the
same formula (tests/test_kernels.py). Conventions: float64 C-contiguous arrays; a coefficient
tensor ``A`` has shape (Ba, K, n) -- Ba boxes (1 when shared by all boxes), K rows, n neurons --
and a per-box vector has shape (Bs, n); a leading axis of size 1 broadcasts. Kernels that bound
from below skip zero coefficients, so that ``0 * inf`` never produces NaN.

Modules: ``activation`` (elementwise relaxations and their backward/forward substitution),
``sshape`` (sound tangent/secant lines of sigmoid, tanh, softplus), ``products`` (box
concretisation and rounding magnitudes), ``windows`` (Select scatter and MaxPool windows),
``adam`` (the projected Adam step of alpha-CROWN), ``interval`` (IBP through a dense layer),
``parallel`` (large batches split over threads), ``quantile`` (where a piecewise-linear
function of one variable turns: weighted quantiles of its breakpoints).
"""
from numba import njit

from .activation import act_backward, act_forward, leaky_relax, relu_relax
from .adam import adam_ascent
from .interval import affine_ibp
from .products import abs_dot, box_lower
from .sshape import sshape_ibp, sshape_relax
from .windows import maxpool_backward, maxpool_relax, select_backward, window_max


@njit(cache=True)
def _ping(x):
    return x + 1.0


# Numba initialises its compilation target (importing its numpy implementations, and scipy's
# BLAS through them) on the first call of any jitted function, cached or not: about a second on
# this machine, far more than loading a kernel from the cache. Do it once here, at import, so
# that the first bound computation only loads its kernels.
_ping(0.0)

__all__ = ["affine_ibp", "act_backward", "act_forward", "relu_relax", "leaky_relax",
           "adam_ascent", "abs_dot", "box_lower", "sshape_ibp", "sshape_relax",
           "maxpool_backward", "maxpool_relax", "select_backward", "window_max"]
