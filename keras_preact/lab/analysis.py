"""Signal propagation through a residual network, measured unit by unit.

The paper's argument (Sec. 3, Eq. 4, 5 and 8; Sec. 4.2) is about what reaches each
unit: with identity shortcuts and an identity after the addition,
``x_L = x_l + sum F(x_i)`` and ``dE/dx_l = dE/dx_L (1 + d/dx_l sum F)``, so the
gradient reaches every unit directly; a scaled shortcut ``h(x) = lambda x`` multiplies
it by ``prod lambda_i`` instead; a ReLU after the addition clips negative signals at
every unit. :func:`propagation` measures those quantities on a batch:

* ``input_norm``: ``||x_l||``, the unit's input;
* ``residual_norm``: ``||F(x_l)||``;
* ``grad_norm``: ``||dE/dx_l||``, E the mean cross-entropy of the batch;
* ``clipped_fraction``: the share of negative entries entering the ReLU after the
  addition (units that have one: ``original``, ``bn_after_addition``), else ``None``;
* ``dead_relu_fraction``: the share of the unit's ReLU channels that are zero at
  every position of every image of the batch.

Norms are per-image L2 norms averaged over the batch. The model is any network
whose layers form one chain (the keras_preact builders, a run's checkpoint);
scanned stages are unrolled first. TensorFlow, JAX and torch.
"""

import csv
import math

import numpy as np

from keras_preact.io import files
from keras_preact.vocab.extras import require

FIELDS = ("unit", "input_norm", "residual_norm", "grad_norm", "clipped_fraction",
          "dead_relu_fraction")


def propagation(model, images, labels, training=False):
    """One record (a dict of :data:`FIELDS`) per residual unit, in network order.

    ``images`` are the network's inputs (normalized as in training), ``labels`` their
    classes. ``training`` uses batch statistics in BN (the moving statistics are left
    as they are). The model is not changed.
    """
    import keras
    from keras import ops

    from keras_preact.models.resnet import unroll
    from keras_preact.layers.scanned import ScannedUnits
    from keras_preact.layers.units import ResidualUnit

    if any(isinstance(layer, ScannedUnits) for layer in model.layers):
        model = unroll(model)
    chain = _chain(model)
    if not any(isinstance(layer, ResidualUnit) for layer in chain):
        raise ValueError(f"{model.name} has no residual unit to measure.")
    images = ops.convert_to_tensor(np.asarray(images, "float32"))
    labels = ops.convert_to_tensor(np.asarray(labels, "int32"))
    from_logits = getattr(getattr(chain[-1], "activation", None), "__name__", "") != "softmax"

    def forward(eps=None, record=None):
        x, i = images, 0
        with keras.StatelessScope():  # BN in training mode must not move its statistics
            for layer in chain:
                if not isinstance(layer, ResidualUnit):
                    x = layer(x, training=training)
                    continue
                if eps is not None:
                    x = x + eps[i]
                if record is None:
                    x = layer(x, training=training)
                else:
                    parts = layer.parts(x, training=training)
                    record.append((layer.name, x, parts))
                    x = parts["output"]
                i += 1
            return ops.mean(keras.losses.sparse_categorical_crossentropy(
                labels, x, from_logits=from_logits))

    record = []
    forward(record=record)
    eps = [ops.zeros_like(x) for _, x, _ in record]
    grads = _gradients(forward, eps)
    return [_unit_record(name, x, parts, g) for (name, x, parts), g in zip(record, grads)]


def _chain(model):
    """The layers of ``model`` in order, each fed by the one before; else a ValueError."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    previous = model.inputs[0] if len(model.inputs) == 1 else None
    for layer in layers:
        try:
            read = layer.input  # the tensor its first call reads
        except ValueError:
            read = None
        if previous is None or read is not previous:
            raise ValueError(
                f"propagation() measures networks whose layers form one chain (the "
                f"keras_preact builders); {model.name} branches at {layer.name}.")
        previous = layer.output
    return layers


def _gradients(loss, eps):
    """The gradient of ``loss(eps)`` with respect to each tensor of ``eps``."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.grad(lambda e: loss(eps=e))(eps)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(eps)
            value = loss(eps=eps)
        return tape.gradient(value, eps)
    if backend == "torch":
        import torch

        eps = [e.detach().requires_grad_(True) for e in eps]
        return torch.autograd.grad(loss(eps=eps), eps)
    raise ValueError(f"propagation() runs on the tensorflow, jax and torch backends, not "
                     f"{backend!r}.")


def _norm(x):
    x = np.asarray(x, "float64").reshape(len(x), -1)
    return float(np.mean(np.sqrt(np.sum(x * x, axis=1))))


def _unit_record(name, x, parts, grad):
    from keras import ops

    def numpy(t):
        return ops.convert_to_numpy(t)

    after = parts["after_addition_relu_input"]
    relus = [numpy(r) for r in parts["relu_inputs"]]
    dead = sum(int(np.sum(np.all(r.reshape(-1, r.shape[-1]) <= 0, axis=0))) for r in relus)
    channels = sum(r.shape[-1] for r in relus)
    return {
        "unit": name,
        "input_norm": _norm(numpy(x)),
        "residual_norm": _norm(numpy(parts["F"])),
        "grad_norm": _norm(numpy(grad)),
        "clipped_fraction": None if after is None else float(np.mean(numpy(after) < 0)),
        "dead_relu_fraction": dead / channels if channels else None,
    }


# -- what scripts/analyze.py measures ---------------------------------------------------
MODEL_OPTIONS = ("placement", "shortcut", "projection")
DATA_CHOICES = ("digits", "cifar10", "cifar100", "noise")


def parse_source(text):
    """``(label, kind, value)`` of a command-line model: a run directory or ``.keras``
    file (``"path"``), or ``ARCH[+key=value...]`` (``"arch"``, ``(arch, options)``) with
    the options of :data:`MODEL_OPTIONS`, e.g. ``resnet110+shortcut=constant_scaling:scale=0.5``."""
    import os

    from keras_preact.vocab import catalog
    from keras_preact.models import registry
    from keras_preact.vocab._validation import check_choice

    if os.path.exists(text):
        return os.path.basename(os.path.normpath(text)), "path", text
    arch, *items = text.split("+")
    check_choice("network (or an existing run directory / .keras file)", arch,
                 registry.list_models())
    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        check_choice(f"option of {arch}", key, MODEL_OPTIONS)
        if not eq or not value:
            raise ValueError(f"{text!r}: write {key}=VALUE.")
        if key in options:
            raise ValueError(f"{text!r} gives +{key}= twice: give each option once.")
        if key == "shortcut":
            value = catalog.resolve_shortcut(value)
        elif key == "placement":
            check_choice("placement", value, catalog.PLACEMENT_FIGURES)
        else:
            check_choice("projection", value, catalog.PROJECTIONS)
        options[key] = value
    return text, "arch", (arch, options)


def load_network(kind, value, classes=10, input_shape=None, seed=0):
    """``(model, normalization or None)``: a fresh network (seeded) or a run's checkpoint
    (``last.keras`` of a run directory, with the run's recorded normalization)."""
    import os

    import keras

    from keras_preact.models import resnet as models
    from keras_preact.models import registry

    if kind == "arch":
        arch, options = value
        keras.utils.set_random_seed(seed)
        kwargs = {} if input_shape is None else {"input_shape": input_shape}
        return registry.get_model(arch, classes=classes, classifier_activation=None,
                                  **options, **kwargs), None
    path, normalization = value, None
    if os.path.isdir(path):
        try:
            config = files.run_config(path)
        except (ValueError, OSError) as e:
            raise ValueError(f"{path!r} is not a keras_preact run directory ({e}); give a run "
                             "directory, a .keras file or an arch name.") from None
        normalization = config.get("normalization")
        path = os.path.join(path, "last.keras")
        if not os.path.exists(path):
            raise ValueError(f"{value!r} holds no last.keras yet: train it for an epoch first.")
    return models.load_keras_file(path), normalization


def batch_of(data, count, input_shape, seed=0, cifar_archive=None, data_dir=None,
             normalization=None):
    """``(images, labels)``: ``count`` test images of a data set, normalized by
    ``normalization`` (``{"mean", "std"}``, else the training set's own statistics), or
    standard-normal ``noise`` of ``input_shape`` with random labels."""
    from keras_preact.data import datasets as data_lib
    from keras_preact.vocab._validation import check_choice

    check_choice("data", data, DATA_CHOICES)
    rng = np.random.default_rng(seed)
    if data == "noise":
        return (rng.standard_normal((count, *input_shape)).astype("float32"),
                rng.integers(0, 10, count))
    x, y = data_lib.load_arrays(data, "test", data_dir, cifar_archive)
    if normalization is None:
        mean, std = data_lib.channel_stats(data_lib.load_arrays(data, "train", data_dir,
                                                               cifar_archive)[0])
    else:
        mean, std = normalization["mean"], normalization["std"]
    if count > len(x):
        raise ValueError(f"--batch {count} exceeds the {len(x)} test images of {data}: use "
                         f"--batch {len(x)} or less, or --data noise.")
    pick = rng.permutation(len(x))[:count]
    images = (x[pick].astype("float32") - np.float32(mean)) / np.float32(std)
    return images, y[pick]


BN_CHOICES = ("auto", "batch", "moving")
# Bytes a measured image takes per value of the network's layer outputs: every unit's
# input, parts and gradient are kept. Measured (TensorFlow, eager): 62 (resnet56) and
# 52 (resnet164).
MEASURE_BYTES = 80


def check_batch(model, batch):
    """Refuse (one line naming the largest that fits) a ``--batch`` whose measurement of
    ``model`` needs more memory than is available, before anything is allocated."""
    from keras_preact.vocab._validation import check_memory
    from keras_preact.layers.scanned import ScannedUnits

    values = sum(math.prod(layer.output.shape[1:])
                 * (layer.count if isinstance(layer, ScannedUnits) else 1)
                 for layer in model.layers)
    check_memory("--batch", batch, MEASURE_BYTES * values,
                 what=f"the activations and gradients of {model.name}")


def _unique_labels(parsed):
    """One label per source: a path's last component, or as many of its last components
    as tell it apart from the others (runs of a grid all end in ``seed0``); a source given
    twice is numbered."""
    import collections
    import os

    paths = [tuple(os.path.normpath(value).split(os.sep)) if kind == "path" else (label,)
             for label, kind, value in parsed]
    for depth in range(1, max(map(len, paths)) + 1):
        labels = ["/".join(p[-depth:]) for p in paths]
        if len(set(labels)) == len(set(paths)):
            break
    counts, seen = collections.Counter(labels), collections.Counter()
    for i, label in enumerate(labels):
        if counts[label] > 1:
            seen[label] += 1
            labels[i] = f"{label} ({seen[label]})"
    return labels


def measure(sources, data="digits", batch=32, seed=0, bn="auto", cifar_archive=None,
            data_dir=None, log=print):
    """``{label: records}`` of each command-line model (:func:`parse_source`) on one batch.

    ``bn``: BN on the ``batch``'s statistics (``training=True``) or the ``moving`` ones;
    ``auto``: the batch's for a fresh network (whose moving statistics are the initial
    0 and 1, which normalize nothing), the moving ones for a trained one.
    """
    from keras_preact.vocab._validation import check_choice

    check_choice("bn", bn, BN_CHOICES)
    parsed = [parse_source(s) for s in sources]  # every name checked before any work
    series = {}
    for label, (_, kind, value) in zip(_unique_labels(parsed), parsed):
        shape = (32, 32, 3) if data != "noise" else None
        model, normalization = load_network(kind, value, input_shape=shape, seed=seed)
        check_batch(model, batch)
        images, labels = batch_of(data, batch, model.input_shape[1:], seed, cifar_archive,
                                  data_dir, normalization)
        training = bn == "batch" or (bn == "auto" and kind == "arch")
        series[label] = propagation(model, images, labels, training=training)
        log(summary_line(label, series[label]))
    return series


def summary_line(label, records):
    """One line: units, how the input and gradient norms change from first to last unit,
    and the largest clipped share."""
    first, last = records[0], records[-1]
    clipped = [r["clipped_fraction"] for r in records if r["clipped_fraction"] is not None]
    return (f"{label}: {len(records)} units; ||x_l|| {first['input_norm']:.3g} -> "
            f"{last['input_norm']:.3g}; ||dE/dx_l|| {first['grad_norm']:.3g} (first unit) vs "
            f"{last['grad_norm']:.3g} (last)"
            + (f"; clipped by f = ReLU up to {max(clipped):.0%}" if clipped else ""))


def write_csv(records, path, label=None):
    """Write records (of one model, or ``{label: records}``) as CSV, atomically."""
    series = records if isinstance(records, dict) else {label or "model": records}
    with files.atomic_file(path) as f:
        writer = csv.writer(f)
        writer.writerow(("model", "index") + FIELDS)
        for name, rows in series.items():
            for index, row in enumerate(rows, start=1):
                writer.writerow((name, index) + tuple(
                    "" if row[k] is None else row[k] for k in FIELDS))
    return path


def read_csv(path):
    """``{label: records}`` from :func:`write_csv`'s file."""
    series = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            record = {k: (row[k] if k == "unit" else None if row[k] == "" else float(row[k]))
                      for k in FIELDS}
            series.setdefault(row["model"], []).append(record)
    return series


PLOTTED = (("input_norm", "||x_l||"), ("residual_norm", "||F(x_l)||"),
           ("grad_norm", "||dE/dx_l||"))


def plot(series, path, title=None):
    """A PNG of ``{label: records}``: one panel per norm (unit index on x, log-scale y),
    one line per model; a fourth panel of the after-addition ReLU's clipped share where
    a model has one."""
    require("matplotlib", what="The propagation figure")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_preact.train.plotting import colours, legend_below, save_figure

    clipped = any(r["clipped_fraction"] is not None for rows in series.values() for r in rows)
    panels = len(PLOTTED) + clipped
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8))
    for (label, rows), colour in zip(series.items(), colours(len(series))):
        units = range(1, len(rows) + 1)
        for ax, (key, name) in zip(axes, PLOTTED):
            values = [r[key] if r[key] and math.isfinite(r[key]) else np.nan for r in rows]
            ax.semilogy(units, values, color=colour, label=label)
            ax.set(xlabel="residual unit", title=name)
        if clipped:
            values = [np.nan if r["clipped_fraction"] is None else r["clipped_fraction"]
                      for r in rows]
            axes[-1].plot(units, values, color=colour, label=label)
            axes[-1].set(xlabel="residual unit", title="share clipped by f = ReLU",
                         ylim=(0.0, 1.0))
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title)
    legend_below(fig, axes[0])
    return save_figure(fig, path)
