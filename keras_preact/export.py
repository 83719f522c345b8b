"""Deployment: SavedModel, LiteRT (TFLite) and ONNX artifacts that are verified.

``export_model(source, out)`` writes one folder::

    out/saved_model/          TensorFlow SavedModel (TF Serving, tf.saved_model.load)
    out/model.tflite          LiteRT float32; model_float16 / model_dynamic / model_int8.tflite
    out/model.onnx            ONNX (onnxruntime)
    out/manifest.json         what it is, how to feed it, sizes, SHA-256, verification

Keras' own ``model.export`` does the conversions. This module adds what it
lacks: the training normalisation (and a softmax) inside the graph so the
artifact takes raw pixels, named signatures, a float32 rebuild of
mixed-precision models, the LiteRT quantisation variants with a representative
dataset drawn from the training data, a check of every artifact through its
real consumer against the Keras model, a manifest, and atomic writes: the folder
is assembled in a temporary sibling and renamed into place only when every
artifact has passed, so a failure or a crash never leaves a half-written export
at ``out``.

TensorFlow is the engine here (SavedModel, the LiteRT converter, tf2onnx);
the model being exported is plain Keras.
"""

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tempfile
import warnings

import numpy as np

import keras

from keras_preact import preprocessing, registry
from keras_preact._validation import check_choice, check_int
from keras_preact.preprocessing import INPUT_NAME, LOGITS, PROBABILITIES
from keras_preact.units import PLACEMENTS, ResidualUnit

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# Max |difference| of the logits against the Keras model, for logits of size up
# to 1; larger logits (an untrained deep network) scale it relatively.
TOLERANCES = {"float32": 1e-4, "float16": 1e-2}
# Quantised to 8 bits: the share of held-out images given the Keras model's class.
MIN_TOP1_AGREEMENT = 0.95
MANIFEST = "manifest.json"
SIGNATURE = "serving_default"
TFLITE_FILES = {q: "model.tflite" if q == "none" else f"model_{q}.tflite" for q in QUANTIZATIONS}
CHECKPOINTS = ("last", "best")


class ExportError(RuntimeError):
    """An export that could not be completed; nothing is left at the target."""


class VerificationError(ExportError):
    """An artifact that does not reproduce the Keras model within tolerance."""


# -- what is being exported --------------------------------------------------------
@dataclasses.dataclass
class Source:
    """A Keras model plus what the manifest needs to describe it."""

    model: keras.Model
    origin: str
    arch: str = None
    dataset: str = None
    normalisation: tuple = None  # (mean, std), 0-255 scale, or None if unknown
    data_dir: str = None
    cifar_archive: str = None
    trained: bool = True

    @property
    def input_shape(self):
        return tuple(self.model.input_shape[1:])

    @property
    def classes(self):
        return int(self.model.output_shape[-1])


def load_keras(path):
    """Load a ``.keras`` file with ``safe_mode=True``; refuse one that needs more."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such .keras file: {path!r}.")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as e:
        if "safe_mode" in str(e) or "unsafe" in str(e).lower():
            raise ValueError(
                f"Refusing to load {path!r}: it needs unsafe deserialisation (for example a "
                "Lambda layer with Python code), and keras_preact only loads models with "
                "safe_mode=True. Re-create the model without Lambda layers, or export it from "
                "its own code."
            ) from e
        raise


def load_source(model=None, arch=None, checkpoint="last", classes=None, input_shape=None,
                dataset=None, normalisation=None, data_dir=None, cifar_archive=None,
                **builder_kwargs):
    """What to export: ``model`` is a training run directory or a ``.keras`` file;
    or ``arch`` names a registry network, built untrained (``classes``,
    ``input_shape``, ``builder_kwargs`` go to its builder).

    A run directory gives its ``last.keras`` (or ``best.keras``), its data set and
    the training normalisation from ``config.json``. ``dataset`` (and
    ``data_dir``/``cifar_archive``) names the data for calibration and
    verification, and for an ``arch`` or a bare ``.keras`` file also the
    normalisation; ``normalisation=(mean, std)`` sets it explicitly.
    """
    from keras_preact import data as data_lib

    if (model is None) == (arch is None):
        raise ValueError("Give exactly one of `model` (a run directory or .keras file) and `arch`.")
    check_choice("checkpoint", checkpoint, CHECKPOINTS)
    if dataset is not None:
        check_choice("dataset", dataset, data_lib.DATASETS)
    config = {}
    if arch is not None:
        spec = registry.get_spec(arch)
        kwargs = dict(builder_kwargs, classifier_activation=None)
        if classes is not None:
            kwargs["classes"] = classes
        if input_shape is not None:
            kwargs["input_shape"] = tuple(input_shape)
        elif dataset is not None and spec.family == "cifar":
            size = data_lib.DATASETS[dataset].image_size
            kwargs["input_shape"] = (size, size, 3)
        if classes is None and dataset is not None:
            kwargs["classes"] = data_lib.DATASETS[dataset].classes
        keras_model = spec.build(**kwargs)
        origin, trained = f"arch:{arch}", False
    else:
        path = os.fspath(model)
        if os.path.isdir(path):
            config_path = os.path.join(path, "config.json")
            keras_path = os.path.join(path, f"{checkpoint}.keras")
            if not os.path.isfile(config_path) or not os.path.isfile(keras_path):
                raise FileNotFoundError(
                    f"{path!r} is not a finished training run: it needs config.json and "
                    f"{checkpoint}.keras (written by scripts/train.py)."
                )
        elif path.endswith(".keras"):
            keras_path = path
            config_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
        else:
            raise ValueError(
                f"--model must be a training run directory or a .keras file, got {path!r}."
            )
        if os.path.isfile(config_path):
            with open(config_path) as f:
                config = json.load(f)
        keras_model = load_keras(keras_path)
        if builder_kwargs or classes is not None or input_shape is not None:
            raise ValueError(
                "classes, input_shape and builder options only apply with `arch`; a saved "
                "model already has them."
            )
        origin, trained = os.path.abspath(keras_path), True
    resolved = config.get("resolved", {})
    arch = arch or resolved.get("arch")
    dataset = dataset or resolved.get("dataset")
    data_dir = data_dir or resolved.get("data_dir")
    cifar_archive = cifar_archive or resolved.get("cifar_archive")
    if normalisation is None and "normalisation" in config:
        normalisation = (config["normalisation"]["mean"], config["normalisation"]["std"])
    if normalisation is None and dataset is not None:
        normalisation = dataset_normalisation(dataset, data_dir, cifar_archive)
    if normalisation is not None:
        mean, std = normalisation
        normalisation = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
    return Source(keras_model, origin, arch=arch, dataset=dataset, normalisation=normalisation,
                  data_dir=data_dir, cifar_archive=cifar_archive, trained=trained)


def dataset_normalisation(dataset, data_dir=None, cifar_archive=None):
    """The (mean, std) training would use for ``dataset``."""
    from keras_preact import data as data_lib

    if dataset == "imagenet2012":
        return data_lib.IMAGENET_MEAN, data_lib.IMAGENET_STD
    images, _ = data_lib.load_arrays(dataset, "train", data_dir=data_dir,
                                     cifar_archive=cifar_archive)
    return data_lib.channel_stats(images)


def describe(model):
    """Placement(s), shortcut(s) and projection(s) of the residual units in ``model``."""
    names = {cls: name for name, cls in PLACEMENTS.items()}
    placements, shortcuts, projections, units = [], [], [], 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, ResidualUnit):
            units += 1
            for seen, value in ((placements, names.get(type(layer), type(layer).__name__)),
                                (shortcuts, dict(layer.shortcut_spec)),
                                (projections, layer.projection)):
                if value not in seen:
                    seen.append(value)
    one = lambda values: values[0] if len(values) == 1 else (values or None)  # noqa: E731
    return {"residual_units": units, "placement": one(placements),
            "shortcut": one(shortcuts), "projection": one(projections)}


# -- the float32, logits-out copy that gets exported --------------------------------
def _float32_config(config):
    if isinstance(config, list):
        return [_float32_config(c) for c in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key == "dtype" and isinstance(value, dict) and "Policy" in str(value.get("class_name")):
            value = {**value, "config": {**value.get("config", {}), "name": "float32"}}
        elif key == "dtype" and isinstance(value, str) and value.startswith("mixed_"):
            value = "float32"
        elif key == "synchronized":
            value = False
        else:
            value = _float32_config(value)
        out[key] = value
    return out


def inference_copy(model):
    """``model`` rebuilt under the float32 policy with a logits output, same weights.

    Mixed-precision graphs convert to LiteRT Flex ops that no interpreter runs;
    a final softmax is moved out of the network into the serving wrapper.
    """
    config = _float32_config(model.get_config())
    for layer in config.get("layers", []):
        if layer.get("name") == "predictions" and "activation" in layer.get("config", {}):
            layer["config"]["activation"] = "linear"
    copy = model.__class__.from_config(config)
    weights = model.get_weights()
    copy.set_weights([np.asarray(w, dtype=np.float32) if np.issubdtype(w.dtype, np.floating)
                      else w for w in weights])
    return copy


def build_serving(source, preprocessing_on=None, softmax=True, input_dtype="float32"):
    """The Keras model that is exported: raw images in, named logits/probabilities out."""
    if preprocessing_on is None:
        preprocessing_on = source.normalisation is not None
    if preprocessing_on and source.normalisation is None:
        raise ValueError(
            "Preprocessing inside the artifact needs the training normalisation: export a "
            "training run directory (its config.json has it), or pass --dataset or "
            "--mean/--std, or turn it off with --no-preprocessing."
        )
    return preprocessing.serving_model(
        inference_copy(source.model),
        normalisation=source.normalisation if preprocessing_on else None,
        softmax=softmax, input_dtype=input_dtype,
        name=f"{source.model.name}_serving",
    )


# -- sample images for calibration and verification -----------------------------
def sample_images(source, split, n, seed=0, raw=True):
    """``n`` images from ``source``'s data set (``split``), raw pixels (0-255, float32)
    when ``raw`` else normalised; random pixels when no data set is known."""
    from keras_preact import data as data_lib

    rng = np.random.default_rng(seed)
    images = None
    if source.dataset == "imagenet2012":
        images = _imagenet_images(source, split, n)
    elif source.dataset is not None:
        x, _ = data_lib.load_arrays(source.dataset, split, data_dir=source.data_dir,
                                    cifar_archive=source.cifar_archive)
        images = x[rng.permutation(len(x))[:n]].astype("float32")
        if images.shape[1:] != source.input_shape:
            raise ValueError(
                f"{source.dataset} images are {images.shape[1:]}, the model takes "
                f"{source.input_shape}."
            )
    if images is None:
        images = rng.integers(0, 256, (n,) + source.input_shape).astype("float32")
    if raw:
        return images
    if source.normalisation is None:
        return rng.standard_normal((n,) + source.input_shape).astype("float32")
    mean, std = (np.asarray(v, "float32") for v in source.normalisation)
    return (images - mean) / std


def _imagenet_images(source, split, n):
    from keras_preact import data as data_lib

    tf = data_lib._tf()
    ds = data_lib.load_tfds("imagenet2012", "train" if split == "train" else "validation",
                            data_dir=source.data_dir, as_supervised=True)
    size = source.input_shape[0]
    mean, std = (np.asarray(v, "float32") for v in (data_lib.IMAGENET_MEAN, data_lib.IMAGENET_STD))
    images = [data_lib.imagenet_eval_map(tf, x, y, size=size)[0].numpy() * std + mean
              for x, y in ds.take(n)]
    return np.stack(images).astype("float32")


# -- consumers: the runtimes that load the artifacts ---------------------------------
def litert_interpreter(path, num_threads=None):
    """The LiteRT interpreter of ``ai-edge-litert``, or ``tf.lite.Interpreter``."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=path, num_threads=num_threads)


def run_tflite(path, images, num_threads=None):
    """Run a ``.tflite`` file's serving signature over ``images``; a dict of outputs."""
    interpreter = litert_interpreter(path, num_threads=num_threads)
    runner = interpreter.get_signature_runner(SIGNATURE)
    detail = runner.get_input_details()[INPUT_NAME]
    batch = int(detail["shape_signature"][0])
    batch = len(images) if batch == -1 else batch
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        if len(chunk) < batch:  # a fixed batch: pad the last chunk
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
        result = runner(**{INPUT_NAME: quantize_input(chunk, detail)})
        outputs.append({k: v[:len(images) - start] for k, v in result.items()})
    return {k: np.concatenate([o[k] for o in outputs]).astype("float32") for k in outputs[0]}


def quantize_input(images, detail):
    """Images as a LiteRT input tensor wants them (quantised for 8-bit inputs)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        q = np.round(images / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    return images.astype(dtype)


def run_saved_model(path, images):
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures[SIGNATURE]
    dtype = fn.structured_input_signature[1][INPUT_NAME].dtype
    out = fn(**{INPUT_NAME: tf.constant(images.astype(dtype.as_numpy_dtype))})
    return {k: v.numpy() for k, v in out.items()}


def run_onnx(path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    dtype = np.uint8 if feed.type == "tensor(uint8)" else np.float32
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {feed.name: images.astype(dtype)})))


# -- comparisons ---------------------------------------------------------------------
def compare(reference, outputs, precision):
    """Verification figures of ``outputs`` against the Keras ``reference``."""
    ref, got = reference[LOGITS], outputs[LOGITS]
    figures = {
        "samples": int(len(ref)),
        "max_abs_diff_logits": float(np.max(np.abs(ref - got))),
        "top1_agreement": float(np.mean(ref.argmax(-1) == got.argmax(-1))),
    }
    if PROBABILITIES in reference:
        figures["max_abs_diff_probabilities"] = float(
            np.max(np.abs(reference[PROBABILITIES] - outputs[PROBABILITIES])))
    if precision in TOLERANCES:
        scale = max(1.0, float(np.max(np.abs(ref))))
        figures.update(criterion="max_abs_diff_logits", tolerance=TOLERANCES[precision] * scale,
                       logit_scale=scale)
        figures["passed"] = bool(figures["max_abs_diff_logits"] <= figures["tolerance"])
    else:
        figures.update(criterion="top1_agreement", min_top1_agreement=MIN_TOP1_AGREEMENT)
        figures["passed"] = bool(figures["top1_agreement"] >= MIN_TOP1_AGREEMENT)
    if not np.all(np.isfinite(got)):
        figures["passed"] = False
        figures["non_finite_outputs"] = True
    return figures


def predict(model, images, batch_size=64):
    outs = [model(images[i:i + batch_size], training=False)
            for i in range(0, len(images), batch_size)]
    return {k: np.concatenate([keras.ops.convert_to_numpy(o[k]) for o in outs]).astype("float32")
            for k in outs[0]}


# -- writing -------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_directory(target, overwrite=False):
    """Yield a temporary sibling of ``target``; rename it to ``target`` on success.

    An existing ``target`` is refused unless ``overwrite``; it is replaced only
    after the new folder is complete. On any failure the temporary folder is
    removed and ``target`` is untouched.
    """
    target = os.path.abspath(os.fspath(target))
    parent, base = os.path.split(target)
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target!r} already exists; pass --overwrite to replace it.")
    os.makedirs(parent, exist_ok=True)
    _remove_stale_partials(parent, base)
    tmp = tempfile.mkdtemp(prefix=f".{base}.partial-{os.getpid()}-", dir=parent)
    try:
        yield tmp
        if os.path.exists(target):
            old = tempfile.mkdtemp(prefix=f".{base}.old-{os.getpid()}-", dir=parent)
            os.rename(target, os.path.join(old, base))
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_partials(parent, base):
    """Folders a killed export left behind (their process is gone)."""
    for name in os.listdir(parent):
        for kind in ("partial", "old"):
            prefix = f".{base}.{kind}-"
            if not name.startswith(prefix):
                continue
            try:
                pid = int(name[len(prefix):].split("-")[0])
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            except PermissionError:
                pass


def file_record(root, relpath):
    """Size and SHA-256 of a file, or of every file under a folder."""
    path = os.path.join(root, relpath)
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    total, digest, per_file = 0, hashlib.sha256(), {}
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        rel = os.path.relpath(f, root)
        size = os.path.getsize(f)
        per_file[rel] = {"bytes": size, "sha256": h.hexdigest()}
        digest.update(f"{rel}\0{h.hexdigest()}\n".encode())
        total += size
    if os.path.isfile(path):
        return {"bytes": total, "sha256": per_file[relpath]["sha256"]}
    record = {"bytes": total, "sha256": digest.hexdigest(), "files": per_file}
    record["sha256_of"] = "sorted '<path>\\0<sha256>\\n' lines of the files"
    return record


def versions():
    import platform

    import tensorflow as tf

    import keras_preact

    out = {"keras_preact": keras_preact.__version__, "keras": keras.__version__,
           "tensorflow": tf.__version__, "numpy": np.__version__,
           "python": platform.python_version()}
    for module in ("ai_edge_litert", "onnx", "onnxruntime", "tf2onnx"):
        try:
            from importlib.metadata import version

            out[module] = version(module.replace("_", "-"))
        except Exception:  # noqa: BLE001 - optional packages
            pass
    return out


def _check_optional(formats):
    if "onnx" in formats:
        missing = []
        for module in ("tf2onnx", "onnx", "onnxruntime"):
            try:
                __import__(module)
            except ImportError:
                missing.append(module)
        if missing:
            raise ExportError(
                f"ONNX export needs {', '.join(missing)}: pip install 'keras_preact[export]'."
            )


def _spec(shape, dtype):
    import tensorflow as tf

    return [tf.TensorSpec(shape, tf.as_dtype(dtype), name=INPUT_NAME)]


def _tflite_options(quantize, representative, raw_pixels, batch):
    import tensorflow as tf

    builtins = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    if quantize == "none":
        return {"target_spec": builtins}
    if quantize == "float16":
        return {"optimizations": [tf.lite.Optimize.DEFAULT],
                "target_spec": {**builtins, "supported_types": [tf.float16]}}
    if quantize == "dynamic":
        return {"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": builtins}

    def dataset():
        step = batch or 1
        for start in range(0, len(representative) - step + 1, step):
            yield [representative[start:start + step].astype("float32")]

    return {"optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": dataset,
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
            # Raw pixels arrive as uint8 (calibrated scale ~1, zero point ~0); normalised
            # inputs are signed.
            "inference_input_type": tf.uint8 if raw_pixels else tf.int8}


@contextlib.contextmanager
def _quiet():
    """Silence converter chatter (tf2onnx's NumPy 2 FutureWarnings, TF deprecations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def export_model(source, out, formats=("saved_model", "tflite"), quantize=("none",),
                 preprocessing_on=None, softmax=True, input_dtype="float32", tflite_batch=1,
                 representative_samples=200, verify_samples=200, verify=True, overwrite=False,
                 seed=0, log=print):
    """Export ``source`` (see :func:`load_source`) into the folder ``out``; return the manifest.

    ``formats`` from ``FORMATS``; ``quantize`` picks the LiteRT variants (from
    ``QUANTIZATIONS``); ``tflite_batch`` fixes the LiteRT batch (``None``:
    dynamic). Every artifact is loaded by its runtime and compared with the
    Keras model on ``verify_samples`` held-out images; a failure raises
    :class:`VerificationError` and leaves nothing at ``out``.
    """
    formats = tuple(dict.fromkeys(check_choice("format", f, FORMATS) for f in formats))
    quantize = tuple(dict.fromkeys(check_choice("quantize", q, QUANTIZATIONS) for q in quantize))
    if not formats:
        raise ValueError(f"Choose at least one format from {', '.join(FORMATS)}.")
    if "tflite" not in formats and quantize != ("none",):
        raise ValueError("--quantize applies to LiteRT: add tflite to --formats.")
    if tflite_batch is not None:
        check_int("tflite_batch", tflite_batch, minimum=1)
    check_int("representative_samples", representative_samples, minimum=1)
    check_int("verify_samples", verify_samples, minimum=1)
    _check_optional(formats)
    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            "Exporting needs the TensorFlow backend (SavedModel, LiteRT and tf2onnx are "
            f"TensorFlow tools); this process runs {keras.backend.backend()!r}. Unset "
            "KERAS_BACKEND or set it to tensorflow."
        )
    serving = build_serving(source, preprocessing_on, softmax, input_dtype)
    raw_pixels = _has_layer(serving, "normalize")
    shape = source.input_shape

    # Held-out images, and what the Keras model says about them.
    checks, samples, reference = {}, None, None
    if verify:
        samples = sample_images(source, "test", verify_samples, seed=seed, raw=raw_pixels)
        reference = predict(serving, samples)
    if verify and raw_pixels:
        # The graph's own preprocessing against the network fed normalised inputs,
        # as in training (the loaded model, at its own precision).
        direct = keras.ops.convert_to_numpy(source.model.predict(
            sample_images(source, "test", verify_samples, seed=seed, raw=False), verbose=0,
            batch_size=64)).astype("float32")
        if not _has_logits(source.model):
            reference_cmp = keras.ops.convert_to_numpy(keras.ops.softmax(reference[LOGITS]))
        else:
            reference_cmp = reference[LOGITS]
        checks["preprocessing"] = {
            "samples": int(len(direct)),
            "max_abs_diff": float(np.max(np.abs(direct - reference_cmp))),
            "top1_agreement": float(np.mean(direct.argmax(-1) == reference_cmp.argmax(-1))),
        }

    artifacts = []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        def record(relpath, fmt, precision, quantization, runner, extra=None):
            entry = {"path": relpath, "format": fmt, "quantization": quantization,
                     **file_record(tmp, relpath), **(extra or {})}
            if verify:
                with _quiet():
                    got = runner(os.path.join(tmp, relpath), samples)
                entry["verification"] = compare(reference, got, precision)
                entry["verification"]["consumer"] = runner.__doc__ or runner.__name__
                if not entry["verification"]["passed"]:
                    raise VerificationError(
                        f"{relpath} ({fmt}, {quantization}) does not reproduce the Keras model: "
                        f"{json.dumps(entry['verification'])}. Nothing was written to {out!r}."
                    )
            else:
                entry["verification"] = "skipped"
            log(f"  {relpath}: {entry['bytes'] / 1e6:.2f} MB"
                + (f", {_summary(entry['verification'])}" if verify else ""))
            artifacts.append(entry)

        if "saved_model" in formats:
            with _quiet():
                serving.export(os.path.join(tmp, "saved_model"), format="tf_saved_model",
                               input_signature=_spec((None,) + shape, input_dtype), verbose=False)
            record("saved_model", "tf_saved_model", "float32", "none", _saved_model_consumer,
                   {"signature": SIGNATURE, "batch": None})
        if "tflite" in formats:
            representative = None
            if "int8" in quantize:
                representative = sample_images(source, "train", representative_samples,
                                               seed=seed + 1, raw=raw_pixels)
            for q in quantize:
                relpath = TFLITE_FILES[q]
                graph = serving
                if q == "int8" and input_dtype != "float32":
                    # The converter quantises a float input itself (inference_input_type).
                    graph = build_serving(source, preprocessing_on, softmax, "float32")
                with _quiet():
                    graph.export(
                        os.path.join(tmp, relpath), format="litert", verbose=False,
                        input_signature=_spec((tflite_batch,) + shape,
                                              "float32" if q == "int8" else input_dtype),
                        **_tflite_options(q, representative, raw_pixels, tflite_batch))
                extra = {"signature": SIGNATURE, "batch": tflite_batch,
                         "input": _tflite_input(os.path.join(tmp, relpath))}
                if q == "int8":
                    extra["representative_samples"] = int(len(representative))
                precision = {"none": "float32", "float16": "float16"}.get(q, "int8")
                record(relpath, "litert", precision, q, _tflite_consumer, extra)
        if "onnx" in formats:
            with _quiet():
                serving.export(os.path.join(tmp, "model.onnx"), format="onnx", verbose=False,
                               input_signature=_spec((None,) + shape, input_dtype))
            record("model.onnx", "onnx", "float32", "none", _onnx_consumer, {"batch": None})

        manifest = _manifest(source, serving, raw_pixels, softmax, input_dtype, artifacts,
                             checks, verify_samples if verify else 0)
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
    return manifest


def _saved_model_consumer(path, images):
    """tf.saved_model.load"""
    return run_saved_model(path, images)


def _tflite_consumer(path, images):
    """LiteRT interpreter (ai-edge-litert, else tf.lite.Interpreter)"""
    return run_tflite(path, images)


def _onnx_consumer(path, images):
    """onnxruntime (CPUExecutionProvider)"""
    return run_onnx(path, images)


def _summary(v):
    if v["criterion"] == "top1_agreement":
        return f"top-1 agreement {100 * v['top1_agreement']:.1f}% (>= {100 * MIN_TOP1_AGREEMENT:.0f}%)"
    return f"max |logit diff| {v['max_abs_diff_logits']:.2e} (<= {v['tolerance']:.0e})"


def _has_layer(model, name):
    return any(layer.name == name for layer in model.layers)


def _has_logits(model):
    layer = model.layers[-1]
    activation = getattr(layer, "activation", None)
    return activation is None or getattr(activation, "__name__", "") == "linear"


def _tflite_input(path):
    detail = litert_interpreter(path).get_signature_runner(SIGNATURE) \
        .get_input_details()[INPUT_NAME]
    scale, zero_point = detail["quantization"]
    return {"name": INPUT_NAME, "shape": [int(d) for d in detail["shape_signature"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)}
            if scale else None}


def _manifest(source, serving, raw_pixels, softmax, input_dtype, artifacts, checks, samples):
    described = describe(source.model)
    spec = registry.MODELS.get(source.arch)
    return {
        "manifest_version": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source.origin,
        "trained": source.trained,
        "arch": source.arch,
        "builder": spec.builder.__name__ if spec else None,
        **described,
        "dataset": source.dataset,
        "classes": source.classes,
        "input": {
            "name": INPUT_NAME, "shape": [None, *source.input_shape], "layout": "NHWC",
            "dtype": input_dtype,
            "values": "raw pixels, 0-255" if raw_pixels else
            ("normalised: (pixels - mean) / std" if source.normalisation else "as the model"),
        },
        "outputs": {LOGITS: [None, source.classes],
                    **({PROBABILITIES: [None, source.classes]} if softmax else {})},
        "signature": SIGNATURE,
        "preprocessing": {
            "included": raw_pixels,
            "formula": "(float(images) - mean) / std, per channel, pixels on the 0-255 scale",
            "mean": list(source.normalisation[0]) if source.normalisation else None,
            "std": list(source.normalisation[1]) if source.normalisation else None,
        },
        "softmax": softmax,
        "verification": {
            "samples": samples,
            "data": f"{source.dataset} test split" if source.dataset else "random pixels",
            "tolerances": {"float32": TOLERANCES["float32"], "float16": TOLERANCES["float16"],
                           "int8_min_top1_agreement": MIN_TOP1_AGREEMENT,
                           "note": "tolerances on logits, scaled by max(1, max |logit|)"},
            **checks,
        },
        "versions": versions(),
        "artifacts": artifacts,
    }
