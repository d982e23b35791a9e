"""Certified training through a Python API: model builders, differentiable IBP and CROWN-IBP,
losses, schedules, Adam, ``fit`` and ``evaluate``.

    from verifier.train import cnn_small, fit, evaluate, load_mnist
    X, y = load_mnist("../shared/data/mnist")
    net, history = fit(cnn_small(), X[:8000], y[:8000], eps=0.1, method="ibp", epochs=20,
                       domain=(0.0, 1.0))
    print(evaluate(net, X[8000:], y[8000:], eps=0.1, method="ibp", domain=(0.0, 1.0)))
"""
from .batchnorm import BN_SOURCE, bn_nodes
from .data import load_mnist, read_idx
from .evaluate import certified_mask, evaluate
from .fit import METHODS, FitOptions, fit
from .models import cnn, cnn7, cnn_large, cnn_medium, cnn_small, ibp_init, mlp
from .params import get_params, set_params
from .schedules import Schedule, linear_ramp, smoothed_ramp

__all__ = ["fit", "FitOptions", "METHODS", "evaluate", "certified_mask", "mlp", "cnn",
           "cnn_small", "cnn_medium", "cnn_large", "cnn7", "ibp_init", "load_mnist", "read_idx",
           "get_params", "set_params", "Schedule", "linear_ramp", "smoothed_ramp", "BN_SOURCE",
           "bn_nodes"]
