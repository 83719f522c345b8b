"""The authors' pre-activation ResNets, transcribed in NumPy, for inference only.

An independent transcription of fb.resnet.torch ``models/preresnet.lua`` (the
version with ``both_preact``), written from the Lua and not from keras_preact:
every convolution is Torch's ``SpatialConvolution(nIn, nOut, k, k, s, s, p, p)``
(``p`` zeros on every side), the max-pool is ``SpatialMaxPooling(3, 3, 2, 2, 1, 1)``,
BN is ``SpatialBatchNormalization`` in evaluation mode (eps 1e-5). Tensors are NHWC,
kernels (kh, kw, in, out).

``params`` is a flat dict of arrays named after the Lua modules:
``stem.conv``, ``stem.bn`` (ImageNet), ``layer{L}.{B}.preact`` (the pre-activation
BN: ``both_preact`` or in the branch), ``layer{L}.{B}.conv{i}``, ``layer{L}.{B}.bn{i}``,
``layer{L}.{B}.shortcut``, ``last.bn``, ``fc.weight``, ``fc.bias``; a BN is a tuple
``(gamma, beta, mean, var)``.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

EPS = 1e-5
IMAGENET = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
            50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


def conv(x, w, stride, pad):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[:2]
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("nhwcij,ijco->nhwo", win, w, optimize=True)


def bn(x, p):
    gamma, beta, mean, var = p
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def relu(x):
    return np.maximum(x, 0.0)


def maxpool(x, k=3, s=2, p=1):
    x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf)
    return sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s].max(axis=(-2, -1))


def _shortcut(x, n_in, n_out, stride, shortcut_type, w):
    if shortcut_type == "C" or (shortcut_type == "B" and n_in != n_out):
        return conv(x, w, stride, 0)
    if n_in != n_out:  # SpatialAveragePooling(1, 1, s, s), then concatenated zeros
        x = x[:, ::stride, ::stride]
        return np.concatenate([x, np.zeros_like(x)], axis=-1)
    return x


def _block(x, form, n, stride, kind, p, name, shortcut_type):
    n_in = x.shape[-1]
    n_out = n * (4 if form == "bottleneck" else 1)
    if kind == "both_preact":
        x = relu(bn(x, p[f"{name}.preact"]))
        s = x
    elif kind != "no_preact":
        s = relu(bn(x, p[f"{name}.preact"]))
    else:
        s = x
    if form == "basic":
        s = conv(s, p[f"{name}.conv1"], stride, 1)
        s = relu(bn(s, p[f"{name}.bn1"]))
        s = conv(s, p[f"{name}.conv2"], 1, 1)
    else:
        s = conv(s, p[f"{name}.conv1"], 1, 0)
        s = relu(bn(s, p[f"{name}.bn1"]))
        s = conv(s, p[f"{name}.conv2"], stride, 1)
        s = relu(bn(s, p[f"{name}.bn2"]))
        s = conv(s, p[f"{name}.conv3"], 1, 0)
    return s + _shortcut(x, n_in, n_out, stride, shortcut_type, p.get(f"{name}.shortcut"))


def _layer(x, form, features, count, stride, p, index, shortcut_type, first=False):
    for b in range(1, count + 1):
        kind = ("no_preact" if first else "both_preact") if b == 1 else None
        x = _block(x, form, features, stride if b == 1 else 1, kind, p,
                   f"layer{index}.{b}", shortcut_type)
    return x


def _head(x, p):
    x = relu(bn(x, p["last.bn"])).mean(axis=(1, 2))
    return x @ p["fc.weight"] + p["fc.bias"]


def imagenet(x, depth, p, shortcut_type="B"):
    form, units = IMAGENET[depth]
    x = maxpool(relu(bn(conv(x, p["stem.conv"], 2, 3), p["stem.bn"])))
    for i, (features, count, stride) in enumerate(zip((64, 128, 256, 512), units, (1, 2, 2, 2))):
        x = _layer(x, form, features, count, stride, p, i + 1, shortcut_type, first=i == 0)
    return _head(x, p)


def cifar(x, depth, p, shortcut_type="A"):
    n = (depth - 2) // 6
    x = conv(x, p["stem.conv"], 1, 1)
    for i, (features, stride) in enumerate(zip((16, 32, 64), (1, 2, 2))):
        x = _layer(x, "basic", features, n, stride, p, i + 1, shortcut_type)
    return _head(x, p)


def random_makers(rng, p):
    """``(conv_w(name, k, n_in, n_out), bn_p(name, c))``: put a He-normal kernel, or a BN with
    random statistics, into ``p``."""
    def conv_w(name, k, n_in, n_out):
        p[name] = rng.normal(0, np.sqrt(2 / (k * k * n_out)), (k, k, n_in, n_out))

    def bn_p(name, c):
        p[name] = (rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c),
                   rng.uniform(0.5, 2.0, c))

    return conv_w, bn_p


def random_params(rng, family, depth, shortcut_type, classes):
    """Random parameters with random BN statistics, named as above."""
    p = {}
    conv_w, bn_p = random_makers(rng, p)

    if family == "imagenet":
        form, units = IMAGENET[depth]
        conv_w("stem.conv", 7, 3, 64)
        bn_p("stem.bn", 64)
        widths, c = (64, 128, 256, 512), 64
    else:
        form, units = "basic", ((depth - 2) // 6,) * 3
        conv_w("stem.conv", 3, 3, 16)
        widths, c = (16, 32, 64), 16
    expansion = 4 if form == "bottleneck" else 1
    for i, (n, count) in enumerate(zip(widths, units), start=1):
        for b in range(1, count + 1):
            name = f"layer{i}.{b}"
            if not (family == "imagenet" and i == 1 and b == 1):
                bn_p(f"{name}.preact", c)
            if form == "basic":
                conv_w(f"{name}.conv1", 3, c, n)
                bn_p(f"{name}.bn1", n)
                conv_w(f"{name}.conv2", 3, n, n)
            else:
                conv_w(f"{name}.conv1", 1, c, n)
                bn_p(f"{name}.bn1", n)
                conv_w(f"{name}.conv2", 3, n, n)
                bn_p(f"{name}.bn2", n)
                conv_w(f"{name}.conv3", 1, n, n * 4)
            out = n * expansion
            if shortcut_type == "C" or (shortcut_type == "B" and c != out):
                conv_w(f"{name}.shortcut", 1, c, out)
            c = out
    bn_p("last.bn", c)
    p["fc.weight"] = rng.normal(0, 0.1, (c, classes))
    p["fc.bias"] = rng.normal(0, 0.1, classes)
    return p
