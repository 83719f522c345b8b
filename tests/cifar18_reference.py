"""The two CIFAR PreActResNet-18s that reproductions train, transcribed in NumPy for inference,
from their descriptions (issue 21) and not from keras_preact:

* ``option_a``: a 3x3/1 conv (64, no bias) then ReLU (no BN); eight basic pre-activation
  units (64, 64, 128, 128, 256, 256, 512, 512; stride 2 on the first unit of stages 2-4, on
  its first 3x3 conv, padding 1); a unit's residual is BN-ReLU-conv3x3-BN-ReLU-conv3x3 of
  its input and its shortcut the raw input (at a stride-2 unit ``x[::2, ::2]`` with the
  channels doubled by zeros); after the last unit ReLU only, the 4x4 average pool, linear.
* ``pytorch_cifar`` (kuangliu/pytorch-cifar): a bare 3x3/1 conv (64, no bias); each unit
  computes ``a = ReLU(BN(x))``, its residual conv3x3(a, stride)-BN-ReLU-conv3x3 (bottleneck:
  conv1x1(a)-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1 to 4x), its shortcut a 1x1 strided conv
  (no bias) of ``a`` where the shape changes, else the raw ``x``; nothing after the last
  unit; the average pool, linear.

The average pool is over the whole last feature map (4x4 at a 32x32 input). Tensors are
NHWC, kernels (kh, kw, in, out); a BN is ``(gamma, beta, mean, var)`` in evaluation mode.
Parameters are named as the PyTorch modules: ``conv1``, ``layer{L}.{B}.bn1`` ...,
``linear.weight``, ``linear.bias``.
"""

import numpy as np

from preresnet_reference import bn, conv, random_makers, relu

WIDTHS, STRIDES = (64, 128, 256, 512), (1, 2, 2, 2)
STAGES = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


def option_a(x, p):
    x = relu(conv(x, p["conv1"], 1, 1))
    for i, (planes, stride) in enumerate(zip(WIDTHS, STRIDES), start=1):
        for b in (1, 2):
            s, name = stride if b == 1 else 1, f"layer{i}.{b}"
            out = conv(relu(bn(x, p[f"{name}.bn1"])), p[f"{name}.conv1"], s, 1)
            out = conv(relu(bn(out, p[f"{name}.bn2"])), p[f"{name}.conv2"], 1, 1)
            shortcut = x[:, ::s, ::s]
            if shortcut.shape[-1] != planes:
                shortcut = np.concatenate([shortcut, np.zeros_like(shortcut)], axis=-1)
            x = out + shortcut
    x = relu(x).mean(axis=(1, 2))
    return x @ p["linear.weight"] + p["linear.bias"]


def pytorch_cifar(x, p, depth=18):
    form, units = STAGES[depth]
    expansion = 4 if form == "bottleneck" else 1
    x = conv(x, p["conv1"], 1, 1)
    for i, (planes, count, stride) in enumerate(zip(WIDTHS, units, STRIDES), start=1):
        for b in range(1, count + 1):
            s, name = stride if b == 1 else 1, f"layer{i}.{b}"
            a = relu(bn(x, p[f"{name}.bn1"]))
            if s != 1 or x.shape[-1] != planes * expansion:
                shortcut = conv(a, p[f"{name}.shortcut"], s, 0)
            else:
                shortcut = x
            if form == "basic":
                out = conv(a, p[f"{name}.conv1"], s, 1)
                out = conv(relu(bn(out, p[f"{name}.bn2"])), p[f"{name}.conv2"], 1, 1)
            else:
                out = conv(a, p[f"{name}.conv1"], 1, 0)
                out = conv(relu(bn(out, p[f"{name}.bn2"])), p[f"{name}.conv2"], s, 1)
                out = conv(relu(bn(out, p[f"{name}.bn3"])), p[f"{name}.conv3"], 1, 0)
            x = out + shortcut
    x = x.mean(axis=(1, 2))
    return x @ p["linear.weight"] + p["linear.bias"]


def random_params(rng, variant, depth=18, classes=10):
    """Random parameters with random BN statistics, named as above."""
    p = {}
    conv_w, bn_p = random_makers(rng, p)

    form, units = STAGES[depth]
    expansion = 4 if form == "bottleneck" else 1
    conv_w("conv1", 3, 3, 64)
    c = 64
    for i, (planes, count, stride) in enumerate(zip(WIDTHS, units, STRIDES), start=1):
        for b in range(1, count + 1):
            name, s = f"layer{i}.{b}", stride if b == 1 else 1
            bn_p(f"{name}.bn1", c)
            if form == "basic":
                conv_w(f"{name}.conv1", 3, c, planes)
                bn_p(f"{name}.bn2", planes)
                conv_w(f"{name}.conv2", 3, planes, planes)
            else:
                conv_w(f"{name}.conv1", 1, c, planes)
                bn_p(f"{name}.bn2", planes)
                conv_w(f"{name}.conv2", 3, planes, planes)
                bn_p(f"{name}.bn3", planes)
                conv_w(f"{name}.conv3", 1, planes, planes * 4)
            out = planes * expansion
            if variant == "pytorch_cifar" and (s != 1 or c != out):
                conv_w(f"{name}.shortcut", 1, c, out)
            c = out
    p["linear.weight"] = rng.normal(0, 0.1, (c, classes))
    p["linear.bias"] = rng.normal(0, 0.1, classes)
    return p


def trainable_count(p):
    """What PyTorch's ``sum(p.numel() for p in model.parameters())`` counts: every conv and
    linear array, and BN's gamma and beta (not its running statistics)."""
    return sum(v[0].size + v[1].size if isinstance(v, tuple) else v.size for v in p.values())
