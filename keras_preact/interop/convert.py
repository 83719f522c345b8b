"""The ecosystem's pretrained pre-activation ResNets as keras_preact models.

* :func:`from_keras_applications`: a keras.applications ``ResNet50V2``,
  ``ResNet101V2`` or ``ResNet152V2`` (with or without top) becomes the
  keras_preact network of layout ``"keras_applications"`` and the same depth.
* :func:`from_keras_hub`: a keras-hub ``ResNetBackbone`` with
  ``use_pre_activation=True``, or a ``ResNetImageClassifier`` on one, becomes the
  network of layout ``"timm"``. This is also the route for timm's ``resnetv2_*``
  checkpoints: keras-hub loads them one to one from their published presets
  (``keras_hub.models.ResNetImageClassifier.from_preset("hf://timm/resnetv2_50.a1h_in1k")``),
  then ``from_keras_hub`` converts the result.
* :func:`load_imagenet_weights`: ``PreActResNet50/101/152(weights="imagenet")``.
* :func:`scan` and :func:`unroll`: a network with its identical units held in
  ``ScannedUnits`` layers (``scan_units=True``), or with every unit its own layer,
  from the other form, with the same weights.

Every weight is copied (the classifier too) and every weight of the result is
accounted for. The source's input preprocessing travels with the converted model
as its first layer, a ``Rescaling`` named ``normalize``
(``keras_preact.layers.preprocessing.normalization_layer``): the converted model takes pixels
on the 0-255 scale, and ``scripts/export.py`` and ``scripts/evaluate.py`` read
the preprocessing back from it. ``include_preprocessing=False`` gives the bare
network, which takes what the source network takes.
"""

import os
import re
import socket

from keras_preact.vocab import catalog
from keras_preact.io import files
from keras_preact.models import registry
from keras_preact.vocab._validation import UserError

# Seconds a download may stall before weights="imagenet" gives up and says what to do.
DOWNLOAD_TIMEOUT = 20
# Where the downloaded and converted weights are kept; None: Keras' own cache
# ($KERAS_HOME or ~/.keras, subfolder "models").
CACHE_DIR = None


class ConversionError(UserError, ValueError):
    """A model that is not a convertible pre-activation ResNet, or weights that do not fit."""


# -- keras.applications --------------------------------------------------------------
def from_keras_applications(model, include_preprocessing=True):
    """The keras_preact model equal to a keras.applications ResNet V2 ``model``.

    Depth, ``include_top``, ``classes``, ``classifier_activation``, ``pooling`` and
    the input shape are read from ``model``. With ``include_preprocessing`` the
    result takes 0-255 pixels and scales them to [-1, 1] as keras.applications'
    ``resnet_v2.preprocess_input`` does; without, it takes what ``model`` takes.
    """
    from keras_preact.models.resnet import preact_resnet_imagenet

    names = {layer.name for layer in model.layers}
    if "post_bn" not in names or "conv2_block1_preact_bn" not in names:
        raise ConversionError(
            f"{getattr(model, 'name', model)!r} is not a keras.applications ResNet V2 "
            "(ResNet50V2, ResNet101V2, ResNet152V2): it has no pre-activation blocks.")
    depth = _depth("bottleneck", [_count(names, rf"conv{s}_block(\d+)_1_conv")
                                  for s in (2, 3, 4, 5)], model)
    top = _top(model, "predictions", {"avg_pool": "avg", "max_pool": "max"})
    normalization = catalog.KERAS_APPLICATIONS_NORMALIZATION if include_preprocessing else None
    ours = _build(preact_resnet_imagenet, depth, "keras_applications", model, top,
                  normalization)
    _copy_keras_applications(model, ours)
    return ours


def _copy_keras_applications(source, ours):
    get = _getter(source)
    pairs = [("stem_conv", get("conv1_conv"))]
    pairs += _unit_pairs(ours, lambda s, u: f"conv{s + 1}_block{u}_", "preact_bn", get)
    pairs += [("post_bn", get("post_bn"))]
    if _has(ours, "predictions"):
        pairs.append(("predictions", get("predictions")))
    _copy_all(ours, pairs, source)


# -- keras-hub (and timm through it) -----------------------------------------------
def from_keras_hub(model, include_preprocessing=None, normalization=None):
    """The keras_preact model equal to a keras-hub pre-activation ResNet.

    ``model`` is a ``keras_hub.models.ResNetBackbone`` built with
    ``use_pre_activation=True`` (converted without a top), or a
    ``ResNetImageClassifier`` on one (its pooling and dense head converted too).
    The preprocessing is the classifier's image converter's (``scale``,
    ``offset``), or ``normalization=(mean, std)`` on the 0-255 scale (timm's
    resnetv2 presets: ImageNet's mean and std). ``include_preprocessing`` defaults
    to whether one is known.
    """
    from keras_preact.models.resnet import preact_resnet_imagenet

    backbone = getattr(model, "backbone", model)
    config = backbone.get_config() if hasattr(backbone, "get_config") else {}
    if not config.get("use_pre_activation") or "stackwise_num_blocks" not in config:
        raise ConversionError(
            f"{getattr(model, 'name', model)!r} is not a keras-hub pre-activation ResNet: "
            "pass a ResNetBackbone with use_pre_activation=True or a ResNetImageClassifier "
            "on one.")
    expected = {"input_conv_filters": [64], "input_conv_kernel_sizes": [7],
                "stackwise_num_filters": [64, 128, 256, 512],
                "stackwise_num_strides": [1, 2, 2, 2]}
    differ = [f"{k}={config.get(k)!r}" for k, v in expected.items() if list(config.get(k)) != v]
    form = {"basic_block": "basic", "bottleneck_block": "bottleneck"}.get(config["block_type"])
    if differ or form is None or backbone.data_format != "channels_last":
        raise ConversionError(
            "Only the standard keras-hub ResNet V2 converts (7x7 stem of 64, widths "
            "64/128/256/512, strides 1/2/2/2, basic_block or bottleneck_block, "
            f"channels_last); this one has {', '.join(differ) or config['block_type']}.")
    depth = _depth(form, config["stackwise_num_blocks"], model)
    head = model if backbone is not model else None
    top = {"include_top": head is not None, "pooling": None,
           "input_shape": backbone.input_shape[1:]}
    if head is not None:
        top.update(classes=head.output_dense.units,
                   classifier_activation=_activation(head.output_dense))
        if type(head.pooler).__name__ != "GlobalAveragePooling2D":
            raise ConversionError("keras_preact's top pools by global average; this "
                                  "classifier pools by max. Convert its backbone instead.")
    if normalization is None and head is not None:
        normalization = _converter_normalization(getattr(head, "preprocessor", None))
    if include_preprocessing is None:
        include_preprocessing = normalization is not None
    if include_preprocessing and normalization is None:
        raise ConversionError(
            "This keras-hub model carries no preprocessing (a backbone, or a classifier "
            "without an image converter): pass normalization=(mean, std) on the 0-255 "
            "scale, or include_preprocessing=False.")
    ours = _build(preact_resnet_imagenet, depth, "timm", backbone, top,
                  normalization if include_preprocessing else None)
    get = _getter(backbone)
    pairs = [("stem_conv", get("conv1_conv"))]
    pairs += _unit_pairs(ours, lambda s, u: f"stack{s - 1}_block{u - 1}_",
                         "pre_activation_bn", get)
    pairs += [("post_bn", get("post_bn"))]
    if head is not None:
        pairs.append(("predictions", head.output_dense))
    _copy_all(ours, pairs, model, extra=head.output_dense.weights if head is not None else ())
    return ours


def _converter_normalization(preprocessor):
    """(mean, std) on the 0-255 scale of a keras-hub image converter's
    ``x * scale + offset``."""
    converter = getattr(preprocessor, "image_converter", None)
    scale = getattr(converter, "scale", None)
    if scale is None:
        return None
    import numpy as np

    scale = np.broadcast_to(np.asarray(scale, "float64"), (3,))
    offset = getattr(converter, "offset", None)
    offset = np.broadcast_to(np.asarray(0.0 if offset is None else offset, "float64"), (3,))
    return tuple(float(v) for v in -offset / scale), tuple(float(v) for v in 1.0 / scale)


# -- shared steps --------------------------------------------------------------------
def _count(names, pattern):
    return sum(1 for n in names if re.fullmatch(pattern, n))


def _depth(form, stage_units, model):
    for depth, entry in catalog.IMAGENET_STAGES.items():
        if entry == (form, tuple(stage_units)):
            return depth
    raise ConversionError(
        f"{getattr(model, 'name', model)!r} has {form} stages of {tuple(stage_units)} units, "
        "which is none of the ImageNet depths "
        f"{', '.join(map(str, catalog.IMAGENET_STAGES))}.")


def _activation(layer):
    name = getattr(layer.activation, "__name__", None)
    return None if name in (None, "linear") else name


def _top(model, dense_name, poolings):
    names = {layer.name: layer for layer in model.layers}
    shape = model.input_shape[1:]
    if dense_name in names:
        dense = names[dense_name]
        return {"include_top": True, "pooling": None, "input_shape": shape,
                "classes": dense.units, "classifier_activation": _activation(dense)}
    pooling = next((mode for name, mode in poolings.items() if name in names), None)
    return {"include_top": False, "pooling": pooling, "input_shape": shape}


def _build(builder, depth, layout, source, top, normalization):
    """Our network for ``source``'s depth and top, with ``normalization`` in front."""
    top = dict(top)
    shape = tuple(top.pop("input_shape"))
    return builder(depth, layout=layout, weights=None, name=f"{source.name}_keras_preact",
                   input_shape=shape, normalization=normalization, **top)


def _getter(source):
    layers = {}

    def walk(model):
        for layer in model.layers:
            layers.setdefault(layer.name, layer)
            if isinstance(getattr(layer, "layers", None), list):  # a nested model
                walk(layer)

    walk(source)

    def get(name):
        if name not in layers:
            raise ConversionError(f"{source.name!r} has no layer {name!r}: not the layout "
                                  "this converter reads.")
        return layers[name]

    return get


def _has(model, name):
    return any(layer.name == name for layer in model.layers)


def _unit_pairs(ours, prefix, preact_name, get):
    """(our layer, their layer) for every layer with weights in every residual unit."""
    from keras import layers

    pairs = []
    units = [(s, u) for s, count in enumerate(ours.options()["stage_units"], start=1)
             for u in range(1, count + 1)]
    for s, u in units:
        unit = ours.get_layer(f"stage{s}_unit{u}")
        p = prefix(s, u)
        convs = [layer for layer in unit.branch if isinstance(layer, layers.Conv2D)]
        bns = [layer for layer in unit.branch if isinstance(layer, layers.BatchNormalization)]
        pairs += [(unit.pre[0], get(p + preact_name))]
        pairs += [(c, get(f"{p}{i}_conv")) for i, c in enumerate(convs, start=1)]
        pairs += [(b, get(f"{p}{i}_bn")) for i, b in enumerate(bns, start=1)]
        if unit.shortcut.proj is not None:
            pairs.append((unit.shortcut.proj, get(f"{p}0_conv")))
    return pairs


def _copy_all(ours, pairs, source, extra=()):
    """Copy each pair's weights; every weight on both sides must be copied exactly once."""
    copied, used = set(), set()
    for mine, theirs in pairs:
        if isinstance(mine, str):
            mine = ours.get_layer(mine)
        values = theirs.get_weights()
        shapes = [tuple(w.shape) for w in mine.weights]
        if shapes != [tuple(v.shape) for v in values]:
            raise ConversionError(
                f"{theirs.name!r} of {source.name!r} has weights {[v.shape for v in values]}, "
                f"keras_preact's {mine.path!r} needs {shapes}.")
        mine.set_weights(values)
        copied.update(id(w) for w in mine.weights)
        used.update(id(w) for w in theirs.weights)
    left = [w.path for w in ours.weights if id(w) not in copied]
    unused = [w.path for w in list(_source_weights(source)) + list(extra) if id(w) not in used]
    if left or unused:
        raise ConversionError(
            f"Converting {source.name!r} left {len(left)} keras_preact weights unset "
            f"{left[:3]} and {len(unused)} of its weights unused {unused[:3]}.")


def _source_weights(source):
    return getattr(source, "backbone", source).weights


# -- scanned and unrolled networks -----------------------------------------------------
def scan(model, remat=False):
    """``keras_preact.models.scan`` (kept here, where earlier versions had it)."""
    from keras_preact.models import resnet as models

    return models.scan(model, remat=remat)


def unroll(model):
    """``keras_preact.models.unroll`` (kept here, where earlier versions had it)."""
    from keras_preact.models import resnet as models

    return models.unroll(model)


# -- weights="imagenet" --------------------------------------------------------------
def imagenet_weights_path(depth, include_top=True):
    """The local path of keras.applications' published ResNet V2 weights of ``depth``,
    fetched with ``keras.utils.get_file`` and keras.applications' own MD5 unless
    already in the cache. Offline it fails within ``DOWNLOAD_TIMEOUT`` seconds and
    says which file to download and how to pass it."""
    fname, md5 = catalog.imagenet_weights_file(depth, include_top)
    return _fetch(fname, md5)


def load_imagenet_weights(model, depth, include_top=True, path=None, keep=None):
    """Load keras.applications' ResNet V2 weights of ``depth`` into ``model`` (a
    ``layout="keras_applications"`` network of that depth, top as ``include_top``).

    ``path`` is a copy of keras.applications' ``.h5`` file; without it the file is
    fetched (:func:`imagenet_weights_path`). Fetched files (``keep``, the default
    without ``path``) are converted once: the converted weights are kept beside
    them in the cache (``keras_preact/``) and loaded from there the next time.
    """
    fname, md5 = catalog.imagenet_weights_file(depth, include_top)
    keep = path is None if keep is None else keep
    if path is None:
        path = _fetch(fname, md5)
    cache = None
    if keep:
        cache = os.path.join(os.path.dirname(path), "keras_preact",
                             fname.replace(".h5", f"_{md5[:8]}.weights.h5"))
        if os.path.isfile(cache):
            try:
                model.load_weights(cache)
                return model
            except ValueError:  # a damaged cache of ours: convert again
                pass
    source = _keras_applications_source(depth, include_top, path, fname)
    _copy_keras_applications(source, model)
    if cache is not None:
        with files.atomic_path(cache) as tmp:
            model.save_weights(tmp)
    return model


def _fetch(fname, md5):
    import keras

    url = catalog.IMAGENET_WEIGHTS_URL + fname
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # get_file's urlretrieve has no timeout
    try:
        return keras.utils.get_file(fname, url, file_hash=md5, cache_subdir="models",
                                    cache_dir=CACHE_DIR)
    except Exception as e:  # noqa: BLE001 - get_file raises a bare Exception on failure
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(
            f"Could not fetch {url} ({reason.rpartition(' -- ')[2]}). Download it on a "
            f"connected machine and pass its path, weights='/path/to/{fname}' (scripts: "
            "--weights PATH), or put it in Keras' cache folder (~/.keras/models/).") from None
    finally:
        socket.setdefaulttimeout(previous)


def _keras_applications_source(depth, include_top, path, fname):
    import keras

    builder = getattr(keras.applications, catalog.IMAGENET_WEIGHTS[depth]["source"])
    try:
        return builder(weights=path, include_top=include_top,
                       input_shape=None if include_top else (None, None, 3))
    except (ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(
            f"{path!r} does not hold keras.applications' "
            f"{catalog.IMAGENET_WEIGHTS[depth]['source']} weights "
            f"{'with' if include_top else 'without'} top ({fname}): {first}") from None


registry.register_pretrained("imagenet", imagenet_weights_path, load_imagenet_weights)
