"""What the generator builds: the models, the points per model, the recipe, in one dataclass.

``GenerateOptions()`` is the default configuration (``DEFAULT_MODELS``: MLPs on 10 inputs and
CNNs on 1x5x5 and 3x5x5 images, of several depths and widths, with ReLU, tanh and sigmoid,
average pooling and residual blocks, at radii 0.02 and 0.05 in inputs of ``[-0.1, 0.1]``).
``tiny()`` is a configuration that generates in seconds, for tests.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .models import ModelSpec
from .pgd import DEFAULT_BATTERY
from .plant import PlantOptions

#: the default benchmark: twelve models
DEFAULT_MODELS = (
    ModelSpec("mlp_relu_2x128_e02", "mlp", (10,), 2, 128, "relu", 0.02),
    ModelSpec("mlp_relu_3x96_e05", "mlp", (10,), 3, 96, "relu", 0.05),
    ModelSpec("mlp_relu_res3x96_e02", "mlp", (10,), 3, 96, "relu", 0.02, residual=True),
    ModelSpec("mlp_relu_4x64_e02", "mlp", (10,), 4, 64, "relu", 0.02),
    ModelSpec("mlp_tanh_2x128_e02", "mlp", (10,), 2, 128, "tanh", 0.02),
    ModelSpec("mlp_sigmoid_2x128_e05", "mlp", (10,), 2, 128, "sigmoid", 0.05),
    ModelSpec("cnn_relu_1x5x5_2c8_e02", "cnn", (1, 5, 5), 2, 8, "relu", 0.02, dense=64),
    ModelSpec("cnn_relu_3x5x5_2c8_pool_e05", "cnn", (3, 5, 5), 2, 8, "relu", 0.05, pool=True,
              dense=64),
    ModelSpec("cnn_relu_1x5x5_res3c8_e02", "cnn", (1, 5, 5), 3, 8, "relu", 0.02,
              residual=True, dense=64),
    ModelSpec("cnn_tanh_3x5x5_2c8_e02", "cnn", (3, 5, 5), 2, 8, "tanh", 0.02, dense=64),
    ModelSpec("cnn_sigmoid_1x5x5_2c8_pool_e05", "cnn", (1, 5, 5), 2, 8, "sigmoid", 0.05,
              pool=True, dense=64),
    ModelSpec("cnn_relu_3x5x5_3c8_e02", "cnn", (3, 5, 5), 3, 8, "relu", 0.02, dense=64),
)


@dataclass(frozen=True)
class GenerateOptions:
    """Every knob of the generator, with its default.

    seed: the seed everything derives from (0).
    models: the architectures and radii (``DEFAULT_MODELS``).
    planted / clean: points per model with a planted counterexample / without (10 / 5), unless
    a model says otherwise (``ModelSpec.planted`` / ``clean``).
    threshold: the least logit margin ``z_t - z_y`` a planted counterexample must have on
    onnxruntime (0.01).
    data_range: inputs lie in ``[-r, r]`` (0.1); every box is intersected with it.
    timeout: seconds per instance written to ``instances.csv`` (60).
    plant: the training recipe (``PlantOptions``).
    battery: the attacks a counterexample must survive ((step / eps, iterations, restarts)).
    workers: models trained at the same time, one process each (1).
    """

    seed: int = 0
    models: tuple[ModelSpec, ...] = DEFAULT_MODELS
    planted: int = 10
    clean: int = 5
    threshold: float = 0.01
    data_range: float = 0.1
    timeout: float = 60.0
    plant: PlantOptions = field(default_factory=PlantOptions)
    battery: tuple[tuple[float, int, int], ...] = DEFAULT_BATTERY
    workers: int = 1

    def to_json(self) -> dict:
        """The options as plain JSON values (for the manifest)."""
        d = dataclasses.asdict(self)
        d["models"] = [dataclasses.asdict(m) for m in self.models]
        return d


#: the tiny configuration's models: a ReLU MLP and a ReLU CNN with average pooling
TINY_MODELS = (
    ModelSpec("tiny_mlp_relu", "mlp", (10,), 2, 32, "relu", 0.05),
    ModelSpec("tiny_cnn_relu", "cnn", (1, 5, 5), 2, 4, "relu", 0.05, pool=True, dense=16),
)


def tiny(seed: int = 0, **overrides) -> GenerateOptions:
    """A configuration that generates in seconds (few points, short training, short battery):
    for tests. Keyword ``overrides`` replace fields."""
    plant = PlantOptions(rounds=300, check_every=100, window=20)
    battery = ((0.25, 0, 200), (0.25, 50, 50), (0.02, 100, 20))
    base = GenerateOptions(seed=seed, models=TINY_MODELS, planted=3, clean=2, timeout=10.0,
                           plant=plant, battery=battery)
    return dataclasses.replace(base, **overrides)


#: the benchmark committed for the project's own tests (tests/data/soundness)
CI_MODELS = (
    ModelSpec("ci_mlp_relu", "mlp", (10,), 2, 32, "relu", 0.05),
    ModelSpec("ci_cnn_relu", "cnn", (1, 5, 5), 2, 4, "relu", 0.05, pool=True, dense=16),
)


def ci(seed: int = 0, **overrides) -> GenerateOptions:
    """The configuration of the small benchmark committed under ``tests/data/soundness``
    (``verifier soundness generate --ci --out tests/data/soundness``): two small models, four
    planted and two clean points each, the default battery."""
    plant = PlantOptions(rounds=800, check_every=100, window=30)
    base = GenerateOptions(seed=seed, models=CI_MODELS, planted=4, clean=2, timeout=10.0,
                           plant=plant)
    return dataclasses.replace(base, **overrides)
