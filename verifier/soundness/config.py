"""What the generator builds: the models, the points per model, the recipe, in one dataclass.

``GenerateOptions()`` is the default configuration (``DEFAULT_MODELS``: twenty models, mostly
wide two-layer ReLU MLPs on 10 inputs, and deeper and residual ReLU MLPs, tanh and sigmoid MLPs,
CNNs on 1x5x5 and 3x5x5 images with average pooling and a residual block, at radii 0.03 to 0.05
in inputs of ``[-0.1, 0.1]``).
``tiny()`` is a configuration that generates in seconds, for tests.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .models import ModelSpec
from .pgd import DEFAULT_BATTERY
from .plant import PlantOptions

#: the default benchmark: twenty models, chosen from the per-model yields of the last measured
#: run of the eighteen-model default (seed 0, 1600 rounds, four battery runs; kept of 12 and CPU
#: seconds): wide two-layer ReLU MLPs at radii 0.035 to 0.045 keep the most per CPU second
#: (2x144 eps 0.045 12 in 186 s, 2x128 eps 0.04 11 in 158 s, 2x112 eps 0.04 9 in 135 s, 2x128
#: eps 0.045 9 in 168 s), residual 3x96 kept 9 in 249 s; 2x160 (4 and 4 in ~230 s each), 4x64
#: (1) and 2x128 at eps 0.05 (3) kept few, and are replaced by more two-layer MLPs of the
#: high-yield kind (other widths and radii, so the models differ) and a residual 3x80. Seeds
#: follow a model's position, so the models that stayed keep their positions (and their
#: yields, up to run-to-run differences): 78 kept from them, about 8 expected from each of the six
#: new ones; measured (2026-12-03, benchmarks/soundness): 109 kept, 32 by the new ones (2-10 each),
#: 46 min on two workers sharing the machine with another job. The plain 3x96
#: (4 kept) stays for depth. The CNNs (1x5x5 and 3x5x5, average pooling, a residual block) and
#: the tanh and sigmoid MLPs train slower and keep few or none of their points (a 3x5x5 CNN with
#: 8 channels kept 0 of 8, a 2x128 tanh MLP 0 of 10), so they get few. The slow models come
#: first, so that two workers finish together.
DEFAULT_MODELS = (
    ModelSpec("cnn_relu_3x5x5_2c4_pool_e05", "cnn", (3, 5, 5), 2, 4, "relu", 0.05, pool=True,
              dense=16, planted=4, clean=2, rounds=800),
    ModelSpec("cnn_relu_1x5x5_res3c4_e05", "cnn", (1, 5, 5), 3, 4, "relu", 0.05,
              residual=True, dense=16, planted=4, clean=2, rounds=800),
    ModelSpec("mlp_relu_res3x96_e05", "mlp", (10,), 3, 96, "relu", 0.05, residual=True),
    ModelSpec("mlp_relu_3x96_e05", "mlp", (10,), 3, 96, "relu", 0.05),
    ModelSpec("mlp_relu_res3x80_e045", "mlp", (10,), 3, 80, "relu", 0.045, residual=True),
    ModelSpec("mlp_relu_2x144_e04", "mlp", (10,), 2, 144, "relu", 0.04),
    ModelSpec("mlp_tanh_2x64_e05", "mlp", (10,), 2, 64, "tanh", 0.05, planted=6, clean=2,
              lr=3e-2),
    ModelSpec("mlp_sigmoid_2x64_e05", "mlp", (10,), 2, 64, "sigmoid", 0.05, planted=6,
              clean=2, lr=1e-1),
    ModelSpec("mlp_relu_2x136_e045", "mlp", (10,), 2, 136, "relu", 0.045),
    ModelSpec("mlp_relu_2x120_e04", "mlp", (10,), 2, 120, "relu", 0.04),
    ModelSpec("mlp_relu_2x128_e045", "mlp", (10,), 2, 128, "relu", 0.045),
    ModelSpec("mlp_relu_2x128_e04", "mlp", (10,), 2, 128, "relu", 0.04),
    ModelSpec("mlp_relu_2x128_e035", "mlp", (10,), 2, 128, "relu", 0.035),
    ModelSpec("mlp_relu_2x128_e03", "mlp", (10,), 2, 128, "relu", 0.03),
    ModelSpec("mlp_relu_2x144_e05", "mlp", (10,), 2, 144, "relu", 0.05),
    ModelSpec("mlp_relu_2x144_e045", "mlp", (10,), 2, 144, "relu", 0.045),
    ModelSpec("mlp_relu_2x112_e05", "mlp", (10,), 2, 112, "relu", 0.05),
    ModelSpec("mlp_relu_2x112_e04", "mlp", (10,), 2, 112, "relu", 0.04),
    ModelSpec("mlp_relu_2x152_e045", "mlp", (10,), 2, 152, "relu", 0.045),
    ModelSpec("mlp_relu_2x112_e045", "mlp", (10,), 2, 112, "relu", 0.045),
)


@dataclass(frozen=True)
class GenerateOptions:
    """Every knob of the generator, with its default.

    seed: the seed everything derives from (0).
    models: the architectures and radii (``DEFAULT_MODELS``).
    planted / clean: points per model with a planted counterexample / without (12 / 2), unless
    a model says otherwise (``ModelSpec.planted`` / ``clean``).
    threshold: the least logit margin ``z_t - z_y`` a planted counterexample must have on
    onnxruntime (0.01).
    data_range: inputs lie in ``[-r, r]`` (0.1); every box is intersected with it.
    timeout: seconds per instance written to ``instances.csv`` (60).
    plant: the training recipe (``PlantOptions`` with 1600 rounds, checked every 200 on half
    the battery's restarts).
    battery: the attacks a counterexample must survive ((step / eps, iterations, restarts)).
    battery_runs: independent runs of the battery (fresh seeds) a kept counterexample must all
    survive (4): with one, the points that run missed by luck are kept, and a fresh battery
    (the audit) finds them.
    workers: models trained at the same time, one process each (1).
    """

    seed: int = 0
    models: tuple[ModelSpec, ...] = DEFAULT_MODELS
    planted: int = 12
    clean: int = 2
    threshold: float = 0.01
    data_range: float = 0.1
    timeout: float = 60.0
    plant: PlantOptions = field(default_factory=lambda: PlantOptions(
        rounds=1600, check_every=200, check_scale=0.5))
    battery: tuple[tuple[float, int, int], ...] = DEFAULT_BATTERY
    battery_runs: int = 4
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
    """A configuration that generates in seconds (few points, short training, a short battery
    run once): for tests. Keyword ``overrides`` replace fields."""
    plant = PlantOptions(rounds=300, check_every=100, window=20)
    battery = ((0.25, 0, 200), (0.25, 50, 50), (0.02, 100, 20))
    base = GenerateOptions(seed=seed, models=TINY_MODELS, planted=3, clean=2, timeout=10.0,
                           plant=plant, battery=battery, battery_runs=1)
    return dataclasses.replace(base, **overrides)


#: the benchmark committed for the project's own tests (tests/data/soundness): two ReLU MLPs
#: at eps 0.05, one plain and one with a residual block (they plant reliably in few rounds; the
#: CNNs tried here kept no planted point in the time a CI benchmark may take)
CI_MODELS = (
    ModelSpec("ci_mlp_relu", "mlp", (10,), 2, 32, "relu", 0.05, planted=8, clean=2),
    ModelSpec("ci_mlp_relu_res", "mlp", (10,), 3, 32, "relu", 0.05, residual=True, planted=4,
              clean=1),
)


def ci(seed: int = 0, **overrides) -> GenerateOptions:
    """The configuration of the small benchmark committed under ``tests/data/soundness``
    (``verifier soundness generate --ci --out tests/data/soundness``): a ReLU MLP (eight planted,
    two clean points) and a residual ReLU MLP (four planted, one clean), 1600 training rounds
    checked every 200 with the whole battery, the default battery run once (the committed
    benchmark was made so). About two to three minutes on one core."""
    plant = PlantOptions(rounds=1600, check_every=200, check_scale=1.0)
    base = GenerateOptions(seed=seed, models=CI_MODELS, timeout=10.0, plant=plant,
                           battery_runs=1)
    return dataclasses.replace(base, **overrides)
