"""The recipes: the paper's and the authors' Torch trainer's (resnet-1k-layers on
fb.resnet.torch), each exactly as described in keras_preact.train.config.RECIPES."""

import dataclasses

import numpy as np
import pytest

import keras

from keras_preact import config as cfg
from keras_preact.train import training
from keras_preact.train.optimizers import TorchSGD, make_optimizer

TORCH = cfg.RECIPES["resnet-1k-layers"]


def resolved(**kwargs):
    return cfg.resolve_config(cfg.TrainConfig(model_dir="x", **kwargs))


# -- the update: Torch's optim.sgd, transcribed ------------------------------------------
def optim_sgd(x, dfdx, state, lr, momentum, weight_decay, nesterov=True, dampening=0.0):
    """One call of Torch's ``optim.sgd`` (torch/optim/sgd.lua) on the NumPy array ``x``,
    written from its source: weight decay into the gradient, the buffer started as the
    first gradient, the rate applied outside the buffer."""
    dfdx = dfdx + weight_decay * x
    if "dfdx" not in state:
        state["dfdx"] = dfdx.copy()
    else:
        state["dfdx"] = momentum * state["dfdx"] + (1 - dampening) * dfdx
    dfdx = dfdx + momentum * state["dfdx"] if nesterov else state["dfdx"]
    return x - lr * dfdx


def _regression(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(24, 3)).astype("float32")
    y = rng.normal(size=(24, 2)).astype("float32")
    w = rng.normal(size=(3, 2)).astype("float32")
    b = rng.normal(size=(2,)).astype("float32")
    return x, y, w, b


def _numpy_run(x, y, w, b, rates, batch, momentum, decay):
    """Mean-squared-error linear regression trained by ``optim_sgd``: its gradients by hand."""
    w, b = w.astype("float64"), b.astype("float64")
    state_w, state_b = {}, {}
    for step, lr in enumerate(rates):
        xs, ys = x[step * batch:(step + 1) * batch], y[step * batch:(step + 1) * batch]
        d = 2.0 * (xs @ w + b - ys) / ys.size  # dL/dprediction of the mean over all entries
        w, b = (optim_sgd(w, xs.T @ d, state_w, lr, momentum, decay),
                optim_sgd(b, d.sum(0), state_b, lr, momentum, decay))
    return w, b


def _keras_run(optimizer, x, y, w, b, batch):
    dense = keras.layers.Dense(2)
    model = keras.Sequential([keras.Input((3,)), dense])
    dense.kernel.assign(w)
    dense.bias.assign(b)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return [keras.ops.convert_to_numpy(v) for v in (dense.kernel, dense.bias)]


def test_the_torch_recipes_step_is_optim_sgd_across_a_rate_drop():
    """Six steps, the rate divided by 10 after two and after four (the recipe's schedule, by
    epoch, two steps per epoch): the Keras step's weights (the bias decayed too) equal the
    transcription's; Keras' own Nesterov SGD, whose buffer holds the old rate, does not."""
    x, y, w, b = _regression()
    momentum, decay, batch = 0.9, 0.05, 4
    schedule = cfg.Schedule(total_iterations=6, epochs=3, boundaries=(2, 4),
                            values=(0.1, 0.01, 0.001), warmup_iterations=0,
                            milestones=(2, 4), steps_per_epoch=2)
    rates = [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    want = _numpy_run(x, y, w, b, rates, batch, momentum, decay)
    ours = _keras_run(make_optimizer(TORCH, training.learning_rate(schedule), momentum, decay),
                      x, y, w, b, batch)
    for got, expected in zip(ours, want):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)
    # The same without the rate drop and the decay is Keras' Nesterov SGD: only the buffer
    # differs, and only after a drop.
    keras_sgd = _keras_run(keras.optimizers.SGD(training.learning_rate(schedule), momentum=momentum,
                                                nesterov=True), x, y, w, b, batch)
    plain = _numpy_run(x, y, w, b, rates, batch, momentum, 0.0)
    assert np.max(np.abs(keras_sgd[0] - plain[0])) > 1e-3
    constant = _numpy_run(x, y, w, b, [0.1] * 6, batch, momentum, 0.0)
    same = _keras_run(keras.optimizers.SGD(0.1, momentum=momentum, nesterov=True), x, y, w, b, batch)
    np.testing.assert_allclose(same[0], constant[0], rtol=2e-5, atol=2e-6)


def test_torch_sgd_round_trips_its_configuration(tmp_path):
    opt = TorchSGD(0.05, momentum=0.8, nesterov=False, decay=3e-4)
    again = TorchSGD.from_config(opt.get_config())
    assert (again.decay, again.momentum, again.nesterov) == (3e-4, 0.8, False)
    with pytest.raises(ValueError, match="decay must be at least 0"):
        TorchSGD(decay=-1.0)
    # A checkpoint of a run under the recipe (compiled with TorchSGD) loads in a new process
    # after `import keras_preact`, as the README promises of every .keras file.
    from conftest import python

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=TorchSGD(0.1, decay=1e-4), loss="mse")
    model.save(tmp_path / "m.keras")
    result = python("-c", "import sys, keras, keras_preact; m = keras.saving.load_model("
                    "sys.argv[1], safe_mode=True); print(type(m.optimizer).__name__, "
                    "m.optimizer.decay)", str(tmp_path / "m.keras"))
    assert result.returncode == 0 and result.stdout.split() == ["TorchSGD", "0.0001"], result.stderr


# -- the schedule and the configuration --------------------------------------------------
def test_the_torch_recipes_schedule_is_train_luas():
    config = resolved(arch="resnet164", recipe="resnet-1k-layers")
    s = cfg.schedule_for(config, steps_per_epoch=391)
    # 164 epochs; train.lua's "epoch >= 81" (1-based): the rate drops after 80 whole epochs.
    assert (s.epochs, s.total_iterations, s.warmup_iterations) == (164, 164 * 391, 0)
    assert s.boundaries == (80 * 391, 121 * 391) and config.warmup is False
    rate = training.learning_rate(s)
    lr = {i: float(rate(i)) for i in (0, 80 * 391 - 1, 80 * 391, 121 * 391 - 1, 121 * 391)}
    assert lr == pytest.approx({0: 0.1, 80 * 391 - 1: 0.1, 80 * 391: 0.01,
                                121 * 391 - 1: 0.01, 121 * 391: 0.001})
    # The ResNet-1001 run of resnet-1k-layers: 200 epochs, the drops still at 81 and 122.
    long = cfg.schedule_for(resolved(arch="resnet1001", recipe="resnet-1k-layers", epochs=200,
                                     batch_size=64), steps_per_epoch=782)
    assert long.epochs == 200 and long.boundaries == (80 * 782, 121 * 782)
    # A shorter run keeps the drops' share of it, on whole epochs.
    short = cfg.schedule_for(resolved(arch="resnet56", dataset="digits", epochs=14,
                                      recipe="resnet-1k-layers"), steps_per_epoch=22)
    assert short.boundaries == (7 * 22, 10 * 22) and short.total_iterations == 14 * 22
    # A run of one epoch drops after it, not from its start.
    one = cfg.schedule_for(resolved(arch="resnet20", dataset="digits", epochs=2,
                                    recipe="resnet-1k-layers"), steps_per_epoch=22)
    assert one.boundaries == (22,) and one.values == pytest.approx((0.1, 0.001))
    # ImageNet: fb.resnet.torch's floor((epoch - 1) / 30), a drop every 30 epochs.
    imagenet = cfg.schedule_for(resolved(arch="resnet50", recipe="resnet-1k-layers"), 5005)
    assert imagenet.boundaries == (30 * 5005, 60 * 5005) and imagenet.warmup_iterations == 0
    longer = cfg.schedule_for(resolved(arch="resnet50", recipe="resnet-1k-layers", epochs=120), 10)
    assert longer.boundaries == (300, 600, 900) and longer.values[-1] == pytest.approx(1e-4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(iterations=300), "the resnet-1k-layers recipe runs in --epochs (default 164), not "
                           "--iterations"),
    (dict(warmup_iterations=40), "the resnet-1k-layers recipe has no warm-up: drop "
                                 "--warmup-iterations, or use --recipe paper"),
    (dict(recipe="torch"), "recipe"),
])
def test_what_the_torch_recipe_refuses(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolved(**{"recipe": "resnet-1k-layers", **kwargs})


def test_the_recipe_is_part_of_a_runs_identity_and_earlier_runs_stay_resumable():
    paper = resolved(arch="resnet20")
    assert paper.recipe == "paper" and "recipe" not in paper.identity()  # as recorded before
    torch_run = dataclasses.replace(paper, recipe="resnet-1k-layers")
    assert torch_run.identity()["recipe"] == "resnet-1k-layers"


def test_the_torch_recipe_decays_every_parameter_and_no_kernel_in_the_loss():
    from keras_preact.data.datasets import make_data

    config = resolved(arch="resnet20", dataset="digits", recipe="resnet-1k-layers", epochs=1,
                      batch_size=64)
    data = make_data("digits", 64, seed=0)
    model = training._build_model(config, data, cfg.schedule_for(config, data.steps_per_epoch),
                                  None)
    assert isinstance(model.optimizer, TorchSGD) and model.optimizer.decay == 1e-4
    assert model.optimizer.nesterov and not model.losses  # no L2 term: the decay is in the step
    paper = training._build_model(dataclasses.replace(config, recipe="paper"), data,
                                  cfg.schedule_for(config, data.steps_per_epoch), None)
    assert isinstance(paper.optimizer, keras.optimizers.SGD) and not paper.optimizer.nesterov
    assert not isinstance(paper.optimizer, TorchSGD)
    # coupled L2 on the 22 kernels (the stem, 18 in the units, the 2 projections and the
    # classifier), nothing else
    assert len(paper.losses) == 22


def test_the_readmes_resnet1001_command_is_resnet_1k_layers_run():
    """README's one command for the resnet-1k-layers ResNet-1001 run: batch 64, 200 epochs, the
    Torch recipe, the drops at epochs 81 and 122, and its published figures beside the result."""
    import os
    import shlex

    from conftest import ROOT, script_module

    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read().replace("\\\n", " ")
    line = next(li for li in text.splitlines()
                if li.startswith("keras-preact train --arch resnet1001 --recipe"))
    args = script_module("train").parser().parse_args(shlex.split(line)[2:])
    config = cfg.resolve_config(cfg.TrainConfig(**vars(args)))
    assert (config.arch, config.dataset, config.batch_size, config.epochs, config.recipe) == (
        "resnet1001", "cifar10", 64, 200, "resnet-1k-layers")
    s = cfg.schedule_for(config, steps_per_epoch=782)  # 50,000 images at 64, the last short
    assert s.epochs == 200 and s.boundaries == (80 * 782, 121 * 782) and not s.warmup_iterations
    assert cfg.recipe_error(config) == {"median": 4.62, "mean": 4.69, "std": 0.20}
    assert cfg.paper_error(config) == 4.92
    assert cfg.recipe_error(dataclasses.replace(config, recipe="paper")) is None
    assert cfg.recipe_error(dataclasses.replace(config, placement="original")) is None
