"""The projected Adam ascent step of alpha-CROWN."""
import numpy as np
from numba import njit


@njit(cache=True)
def adam_ascent(alpha, grad, m, v, mask, lr, beta1, beta2, eps, t, upper=1.0):
    """One Adam step that *increases* the objective, projected onto [0, upper], in place
    (slopes: [0, 1]; beta-CROWN's split multipliers: [0, inf)).

    Where ``mask[b, j]`` (an unstable neuron of box b): ``m = beta1 m + (1 - beta1) g``,
    ``v = beta2 v + (1 - beta2) g^2``, ``alpha += lr * (m / (1 - beta1^t)) /
    (sqrt(v / (1 - beta2^t)) + eps)``, then clipped to [0, upper]; elsewhere nothing changes.
    alpha, grad, m, v: (B, K, n); mask: (Bm, n) bool with Bm in {1, B}; t >= 1 (step count)."""
    B, K, n = alpha.shape
    Bm = mask.shape[0]
    c1 = 1.0 - beta1 ** t
    c2 = 1.0 - beta2 ** t
    for b in range(B):
        mk = mask[b if Bm > 1 else 0]
        for r in range(K):
            al = alpha[b, r]
            g = grad[b, r]
            mm = m[b, r]
            vv = v[b, r]
            for j in range(n):
                if mk[j]:
                    m1 = beta1 * mm[j] + (1.0 - beta1) * g[j]
                    v1 = beta2 * vv[j] + (1.0 - beta2) * g[j] * g[j]
                    mm[j] = m1
                    vv[j] = v1
                    x = al[j] + lr * (m1 / c1) / (np.sqrt(v1 / c2) + eps)
                    al[j] = min(upper, max(0.0, x))
