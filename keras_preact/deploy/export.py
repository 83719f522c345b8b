"""Deployment: SavedModel, LiteRT (TFLite) and ONNX artifacts that are verified.

``export_model(source, out)`` writes one folder::

    out/saved_model/          TensorFlow SavedModel (TF Serving, tf.saved_model.load)
    out/model.tflite          LiteRT float32; model_float16 / model_dynamic / model_int8.tflite
    out/model.onnx            ONNX (onnxruntime)
    out/manifest.json         what it is, how to feed it, sizes, SHA-256, verification

Keras' own ``model.export`` does the conversions. This module adds what it
lacks: the training normalization (and a softmax) inside the graph so the
artifact takes raw pixels, named signatures, a float32 rebuild of
mixed-precision models, the LiteRT quantisation variants with a representative
dataset drawn from the training data, a check of every artifact through its
real consumer (:func:`open_runtime`, also what the benchmark times) against the
Keras model, a manifest, and safe writes (:mod:`keras_preact.io.files`): the folder
is assembled in a hidden sibling and renamed into place only when every artifact
has passed, an existing folder is replaced only if it is an export, and one
process writes a target at a time.

TensorFlow is the engine here (SavedModel, the LiteRT converter, tf2onnx);
the model being exported is plain Keras. Keras and TensorFlow are imported
only when used, so the command line starts fast.
"""

import contextlib
import dataclasses
import datetime
import hashlib
import os
import warnings

import numpy as np

from keras_preact.vocab import catalog
from keras_preact.io import files
from keras_preact.layers import preprocessing
from keras_preact.models import registry
from keras_preact.vocab._validation import UserError, check_choice, check_int
from keras_preact.vocab.extras import install_hint
from keras_preact.layers.preprocessing import INPUT_NAME, LOGITS, PROBABILITIES

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# Max |difference| of the logits against the Keras model, for logits of size up
# to 1; larger logits (an untrained deep network) scale it relatively.
TOLERANCES = {"float32": 1e-4, "float16": 1e-2}
# Quantised to 8 bits: the share of held-out images given the Keras model's class.
MIN_TOP1_AGREEMENT = 0.95
MANIFEST = files.EXPORT_MANIFEST
SIGNATURE = "serving_default"
TFLITE_FILES = {q: "model.tflite" if q == "none" else f"model_{q}.tflite" for q in QUANTIZATIONS}
CHECKPOINTS = ("last", "best")
EXPORT_EXTRA = install_hint("onnx")


class ExportError(UserError, RuntimeError):
    """An export that could not be completed; nothing is left at the target."""


class VerificationError(ExportError):
    """An artifact that does not reproduce the Keras model within tolerance."""


# -- what is being exported --------------------------------------------------------
@dataclasses.dataclass
class Source:
    """A Keras model plus what the manifest needs to describe it."""

    model: object  # a keras.Model
    origin: str
    arch: str = None
    dataset: str = None
    normalization: tuple = None  # (mean, std), 0-255 scale, or None if unknown
    data_dir: str = None
    cifar_archive: str = None
    trained: bool = True
    image_shape: tuple = None  # (H, W, C) the artifacts take; default: the model's
    notes: list = dataclasses.field(default_factory=list)  # what the user should know
    checkpoint: dict = None  # a run's checkpoint: which epoch, whether the run is finished

    @property
    def input_shape(self):
        shape = tuple(self.image_shape or self.model.input_shape[1:])
        if None in shape:
            raise ValueError(
                f"{self.origin} takes images of any size; the artifacts need one: pass "
                "--input-shape H W C.")
        return shape

    @property
    def classes(self):
        return int(self.model.output_shape[-1])


def load_source(model=None, arch=None, checkpoint="last", classes=None, input_shape=None,
                dataset=None, normalization=None, data_dir=None, cifar_archive=None,
                **builder_kwargs):
    """What to export: ``model`` is a training run directory or a ``.keras`` file;
    or ``arch`` names a registry network, built untrained (``classes``,
    ``builder_kwargs`` go to its builder).

    A run directory gives its ``last.keras`` (or ``best.keras``), its data set and
    the training normalization from ``config.json``. ``dataset`` (and
    ``data_dir``/``cifar_archive``) names the data for calibration and
    verification, and for an ``arch`` or a bare ``.keras`` file also the
    normalization; ``normalization=(mean, std)`` sets it explicitly. A ``.keras``
    file that starts with its own ``normalize`` layer (a model converted by
    ``keras_preact.interop.convert``) gives that preprocessing; ``weights="imagenet"`` in
    ``builder_kwargs`` gives keras.applications' [-1, 1] scaling.
    ``input_shape`` fixes the artifacts' image size (for ``arch``, the network's).
    """
    from keras_preact.data import datasets as data_lib

    if (model is None) == (arch is None):
        raise ValueError("Give exactly one of `model` (a run directory or .keras file) and `arch`.")
    check_choice("checkpoint", checkpoint, CHECKPOINTS)
    if dataset is not None:
        check_choice("dataset", dataset, data_lib.DATASETS)
    if arch is not None:
        keras_model = _build_arch(arch, classes, input_shape, dataset, builder_kwargs)
        weights = builder_kwargs.get("weights")
        source, run = Source(keras_model, f"arch:{arch}" + (f" weights:{weights}" if weights
                                                             else ""),
                             arch=arch, trained=weights is not None), {}
        if normalization is None and (weights == "imagenet"
                                      or catalog.is_keras_applications_file(weights)):
            normalization = catalog.KERAS_APPLICATIONS_NORMALIZATION
    else:
        if builder_kwargs or classes is not None:
            raise ValueError("classes and builder options only apply with `arch`; a saved "
                             "model already has them.")
        keras_path, run = _saved_model_path(os.fspath(model), checkpoint)
        from keras_preact.models.resnet import load_keras_file

        source = Source(_unrolled(load_keras_file(keras_path)), os.path.abspath(keras_path))
        if run:
            source.checkpoint = files.run_checkpoint(os.path.dirname(source.origin),
                                                     os.path.basename(keras_path))
        if normalization is None:  # a converted pretrained model carries its preprocessing
            source.model, normalization = preprocessing.split_normalization(source.model)
    source.model = _unrolled(source.model)
    resolved = run.get("resolved", {})
    source.arch = source.arch or resolved.get("arch")
    source.dataset = dataset or resolved.get("dataset")
    source.data_dir = data_dir or resolved.get("data_dir")
    source.cifar_archive = cifar_archive or resolved.get("cifar_archive")
    if input_shape is not None:
        source.image_shape = _check_input_shape(source, input_shape)
    elif resolved.get("eval_size") and None in tuple(source.model.input_shape[1:3]):
        source.image_shape = (resolved["eval_size"], resolved["eval_size"],
                              source.model.input_shape[-1])
    if normalization is None and "normalization" in run:
        normalization = (run["normalization"]["mean"], run["normalization"]["std"])
    if normalization is None and source.dataset is not None:
        normalization = dataset_normalization(source.dataset, source.data_dir,
                                              source.cifar_archive)
    if normalization is not None:
        source.normalization = _check_normalization(source, *normalization)
    _add_notes(source)
    return source


def _check_input_shape(source, shape):
    """``(H, W, C)`` the artifacts take: the model's channels, and its size where fixed."""
    shape = tuple(int(d) for d in shape)
    own = tuple(source.model.input_shape[1:])
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"--input-shape takes three positive sizes H W C, got {list(shape)}.")
    if len(own) != 3 or any(o is not None and o != d for o, d in zip(own, shape)):
        raise ValueError(
            f"--input-shape {' '.join(map(str, shape))} does not fit {source.origin}, which "
            f"takes {'x'.join('any' if d is None else str(d) for d in own)} images: give "
            f"its own {'channels' if own[:2] == (None, None) else 'shape'}.")
    return shape


def _check_normalization(source, mean, std):
    """``(mean, std)`` as float tuples: one finite value per input channel, ``std > 0``."""
    import math

    channels = source.model.input_shape[-1]
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"--mean and --std need {channels} values each (one per channel of "
                         f"{source.origin}), got {len(mean)} and {len(std)}.")
    if not all(map(math.isfinite, mean + std)) or min(std) <= 0:
        raise ValueError(f"--mean must be finite and --std finite and above 0, got mean "
                         f"{list(mean)}, std {list(std)}.")
    return mean, std


def _build_arch(arch, classes, input_shape, dataset, builder_kwargs):
    from keras_preact.data import datasets as data_lib

    spec = registry.get_spec(arch)
    kwargs = dict(builder_kwargs, classifier_activation=None)
    if classes is not None:
        kwargs["classes"] = classes
    elif dataset is not None:
        kwargs["classes"] = data_lib.DATASETS[dataset].classes
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    elif dataset is not None and spec.family == "cifar":
        size = data_lib.DATASETS[dataset].image_size
        kwargs["input_shape"] = (size, size, 3)
    return spec.build(**kwargs)


def _saved_model_path(path, checkpoint):
    """(the .keras file, the run's config.json or {}) of a run directory or a .keras file."""
    if os.path.isdir(path):
        keras_path = os.path.join(path, f"{checkpoint}.keras")
        if not os.path.isfile(os.path.join(path, files.RUN_CONFIG)) or not os.path.isfile(keras_path):
            raise ValueError(
                f"{path!r} is not a training run with a checkpoint: it needs "
                f"{files.RUN_CONFIG} and {checkpoint}.keras (written by keras-preact train)."
            )
        return keras_path, files.run_config(path)
    if not path.endswith(".keras"):
        raise ValueError(
            f"--model must be a training run directory or a .keras file, got {path!r}."
        )
    folder = os.path.dirname(os.path.abspath(path))
    return path, files.run_config(folder) if os.path.isfile(
        os.path.join(folder, files.RUN_CONFIG)) else {}


def _add_notes(source):
    state = source.checkpoint
    if state and state["run"] != files.RunState.FINISHED:
        training = state["run"] == files.RunState.TRAINING
        held = (f"epoch {state['epoch']} of {state['epochs']}" if state["epoch"]
                else "an epoch it does not record")
        source.notes.append(
            f"the run is {'still training' if training else 'unfinished'}: "
            f"{state['file']} holds {held}, not the final weights (recorded in the manifest)")
    described = describe(source.model)
    if not described["residual_units"]:
        source.notes.append("this model has no keras_preact residual units: it is exported "
                            "as a plain Keras model")
    if source.normalization is None:
        source.notes.append("no training normalization is known for this model, so none is "
                            "inside the artifacts: they take the model's own inputs (pass "
                            "--dataset, or --mean and --std, to include one)")


def dataset_normalization(dataset, data_dir=None, cifar_archive=None):
    """The (mean, std) training would use for ``dataset``."""
    from keras_preact.data import datasets as data_lib

    if dataset == "imagenet2012":
        return data_lib.IMAGENET_MEAN, data_lib.IMAGENET_STD
    images, _ = data_lib.load_arrays(dataset, "train", data_dir=data_dir,
                                     cifar_archive=cifar_archive)
    return data_lib.channel_stats(images)


def _unrolled(model):
    """The artifacts hold the unrolled network (the same weights): every format and
    runtime takes it, and the layers read as in the paper."""
    from keras_preact.models.resnet import unroll
    from keras_preact.layers.scanned import ScannedUnits

    if any(isinstance(layer, ScannedUnits) for layer in model.layers):
        return unroll(model)
    return model


def describe(model):
    """Placement(s), shortcut(s) and projection(s) of the residual units in ``model``."""
    from keras_preact.layers.scanned import residual_units

    placements, shortcuts, projections, units = [], [], [], 0
    for unit, count in residual_units(model):
        units += count
        for seen, value in ((placements, unit.variant),
                            (shortcuts, dict(unit.shortcut_spec)),
                            (projections, unit.projection)):
            if value not in seen:
                seen.append(value)
    one = lambda values: values[0] if len(values) == 1 else (values or None)  # noqa: E731
    return {"residual_units": units, "placement": one(placements),
            "shortcut": one(shortcuts), "projection": one(projections)}


# -- the float32, logits-out copy that gets exported --------------------------------
def inference_copy(model):
    """``model`` cloned under the float32 policy with a logits output, same weights.

    Mixed-precision graphs convert to LiteRT Flex ops that no interpreter runs;
    synchronised BN is a training-time device; a final softmax moves out of the
    network into the serving wrapper.
    """
    import keras

    output = model.get_layer(model.output_names[0]) if hasattr(model, "output_names") \
        else model.layers[-1]

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        for key in ("synchronized", "sync_bn"):
            if key in config:
                config[key] = False
        if layer is output:
            if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
                return keras.layers.Identity(name=layer.name, dtype="float32")
            if config.get("activation") not in (None, "linear"):
                config["activation"] = "linear"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights([np.asarray(w, dtype=np.float32) if np.issubdtype(w.dtype, np.floating)
                      else w for w in model.get_weights()])
    return copy


def build_serving(source, preprocessing_on=None, softmax=True, input_dtype="float32"):
    """The Keras model that is exported: raw images in, named logits/probabilities out."""
    if preprocessing_on is None:
        preprocessing_on = source.normalization is not None
    if preprocessing_on and source.normalization is None:
        raise ValueError(
            "Preprocessing inside the artifact needs the training normalization: export a "
            "training run directory (its config.json has it), or pass --dataset or "
            "--mean/--std, or turn it off with --no-preprocessing."
        )
    return preprocessing.serving_model(
        inference_copy(source.model),
        normalization=source.normalization if preprocessing_on else None,
        softmax=softmax, input_dtype=input_dtype, input_shape=source.input_shape,
        name=f"{source.model.name}_serving",
    )


# -- sample images for calibration and verification -----------------------------
def sample_images(source, split, n, seed=0, raw=True):
    """``n`` images from ``source``'s data set (``split``), raw pixels (0-255, float32)
    when ``raw`` else normalized; random pixels when no data set is known."""
    from keras_preact.data import datasets as data_lib

    rng = np.random.default_rng(seed)
    shape = source.input_shape
    if source.dataset == "imagenet2012":
        tf = data_lib.tensorflow()
        ds = data_lib.load_tfds("imagenet2012", "train" if split == "train" else "validation",
                                data_dir=source.data_dir)
        images = np.stack([data_lib.imagenet_eval_crop(tf, x, shape[0]).numpy()
                           for x, _ in ds.take(n)]).astype("float32")
    elif source.dataset is not None:
        x, _ = data_lib.load_arrays(source.dataset, split, data_dir=source.data_dir,
                                    cifar_archive=source.cifar_archive)
        images = x[rng.permutation(len(x))[:n]].astype("float32")
        if images.shape[1:] != shape:
            raise ValueError(
                f"{source.dataset} images are {images.shape[1:]}, the model takes {shape}.")
    else:
        images = rng.integers(0, 256, (n,) + shape).astype("float32")
    if raw:
        return images
    if source.normalization is None:
        return rng.standard_normal((n,) + shape).astype("float32")
    from keras_preact.layers.preprocessing import normalization_layer

    import keras

    return keras.ops.convert_to_numpy(normalization_layer(*source.normalization)(images))


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


def quantize_input(images, detail):
    """Images as a LiteRT input tensor wants them (quantised for 8-bit inputs)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        q = np.round(images / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    return images.astype(dtype)


class _LiteRT:
    """LiteRT interpreter (ai-edge-litert, else tf.lite.Interpreter)"""

    def __init__(self, path, threads=None):
        self.runner = litert_interpreter(path, num_threads=threads).get_signature_runner(SIGNATURE)
        self.detail = self.runner.get_input_details()[INPUT_NAME]
        batch = int(self.detail["shape_signature"][0])
        self.batch = None if batch == -1 else batch

    def __call__(self, images):
        batch = self.batch or len(images)
        outputs = []
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            if len(chunk) < batch:  # a fixed batch: pad the last chunk
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
            result = self.runner(**{INPUT_NAME: quantize_input(chunk, self.detail)})
            outputs.append({k: v[:len(images) - start] for k, v in result.items()})
        return {k: np.concatenate([o[k] for o in outputs]).astype("float32") for k in outputs[0]}


class _SavedModel:
    """tf.saved_model.load"""

    def __init__(self, path, threads=None):
        import tensorflow as tf

        self.tf = tf
        self.fn = tf.saved_model.load(path).signatures[SIGNATURE]
        self.dtype = self.fn.structured_input_signature[1][INPUT_NAME].dtype.as_numpy_dtype

    def __call__(self, images):
        out = self.fn(**{INPUT_NAME: self.tf.constant(images.astype(self.dtype))})
        return {k: v.numpy() for k, v in out.items()}


class _Onnx:
    """onnxruntime (CPUExecutionProvider)"""

    def __init__(self, path, threads=None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(path, options,
                                                    providers=["CPUExecutionProvider"])
        feed = self.session.get_inputs()[0]
        self.feed, self.dtype = feed.name, np.uint8 if feed.type == "tensor(uint8)" else np.float32
        self.names = [o.name for o in self.session.get_outputs()]

    def __call__(self, images):
        return dict(zip(self.names, self.session.run(self.names,
                                                     {self.feed: images.astype(self.dtype)})))


RUNTIMES = {"tf_saved_model": _SavedModel, "litert": _LiteRT, "onnx": _Onnx}


def open_runtime(path, fmt, threads=None):
    """The artifact at ``path`` loaded by its real consumer: a callable from raw images
    (NumPy, batched) to its named outputs. ``fmt`` is a manifest format."""
    with _quiet():
        return RUNTIMES[fmt](path, threads=threads)


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
    """``{output name: float32 array}`` of ``model`` on ``images``."""
    return {k: np.asarray(v, "float32")
            for k, v in model.predict(images, batch_size=batch_size, verbose=0).items()}


# -- writing -------------------------------------------------------------------------
def file_record(root, relpath):
    """Size and SHA-256 of a file, or of every file under a folder."""
    path = os.path.join(root, relpath)
    paths = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    total, digest, per_file = 0, hashlib.sha256(), {}
    for f in paths:
        rel, sha = os.path.relpath(f, root), files.sha256(f)
        size = os.path.getsize(f)
        per_file[rel] = {"bytes": size, "sha256": sha}
        digest.update(f"{rel}\0{sha}\n".encode())
        total += size
    if os.path.isfile(path):
        return {"bytes": total, "sha256": per_file[relpath]["sha256"]}
    return {"bytes": total, "sha256": digest.hexdigest(), "files": per_file,
            "sha256_of": "sorted '<path>\\0<sha256>\\n' lines of the files"}


def versions():
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import keras
    import tensorflow as tf

    out = {"keras_preact": catalog.VERSION, "keras": keras.__version__,
           "tensorflow": tf.__version__, "numpy": np.__version__,
           "python": platform.python_version()}
    for module in ("ai-edge-litert", "onnx", "onnxruntime", "tf2onnx"):
        with contextlib.suppress(PackageNotFoundError):
            out[module.replace("-", "_")] = version(module)
    return out


def check_target(out, overwrite=False):
    """Raise ``RefusedError`` unless ``out`` may receive an export (absent, empty, or an
    export to replace with ``overwrite``)."""
    files.check_replaceable(os.path.abspath(os.fspath(out)), overwrite, files.export_record,
                            "export folder")


def check_formats(formats, quantize, tflite_batch=1, representative_samples=1,
                  verify_samples=1):
    """Validated ``(formats, quantize)``; the runtimes each format needs are installed."""
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
    if "onnx" in formats:
        import importlib.util

        missing = [m for m in ("tf2onnx", "onnx", "onnxruntime")
                   if importlib.util.find_spec(m) is None]
        if missing:
            raise ExportError(f"ONNX export needs {', '.join(missing)}: {EXPORT_EXTRA}.")
    return formats, quantize


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
            # Raw pixels arrive as uint8 (calibrated scale ~1, zero point ~0); normalized
            # inputs are signed.
            "inference_input_type": tf.uint8 if raw_pixels else tf.int8}


@contextlib.contextmanager
def _quiet():
    """Silence converter chatter (tf2onnx's NumPy 2 FutureWarnings, TF deprecations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# -- the export ------------------------------------------------------------------------
@dataclasses.dataclass
class _Plan:
    """One artifact to write: where, through which converter, checked how."""

    relpath: str
    fmt: str  # the manifest's format (and the runtime that reads it)
    precision: str  # float32, float16 or int8: the tolerance it is held to
    quantization: str
    graph: object  # the serving model to convert
    keras_format: str  # model.export's format
    input_spec: list
    options: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)


def export_model(source, out, formats=("saved_model", "tflite"), quantize=("none",),
                 preprocessing_on=None, softmax=True, input_dtype="float32", tflite_batch=1,
                 representative_samples=200, verify_samples=200, verify=True, overwrite=False,
                 seed=0, log=print):
    """Export ``source`` (see :func:`load_source`) into the folder ``out``; return the manifest.

    ``formats`` from ``FORMATS``; ``quantize`` picks the LiteRT variants (from
    ``QUANTIZATIONS``); ``tflite_batch`` fixes the LiteRT batch (``None``:
    dynamic). Every artifact is loaded by its runtime and compared with the
    Keras model on ``verify_samples`` held-out images; a failure raises
    :class:`VerificationError` and leaves nothing at ``out``. An existing ``out``
    is replaced only with ``overwrite`` and only if it is an export.
    """
    import keras

    formats, quantize = check_formats(formats, quantize, tflite_batch, representative_samples,
                                      verify_samples)
    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            "Exporting needs the TensorFlow backend (SavedModel, LiteRT and tf2onnx are "
            f"TensorFlow tools); this process runs {keras.backend.backend()!r}. Unset "
            "KERAS_BACKEND or set it to tensorflow."
        )
    out = os.path.abspath(os.fspath(out))
    check_target(out, overwrite)
    serving = build_serving(source, preprocessing_on, softmax, input_dtype)
    raw_pixels = any(layer.name == "normalize" for layer in serving.layers)
    samples = reference = None
    checks = {}
    if verify:
        samples = sample_images(source, "test", verify_samples, seed=seed, raw=raw_pixels)
        reference = predict(serving, samples)
        if raw_pixels:
            checks["preprocessing"] = _check_preprocessing(source, reference, verify_samples,
                                                           seed)
    plans = _plan(source, serving, formats, quantize, preprocessing_on, softmax, input_dtype,
                  tflite_batch, representative_samples, raw_pixels, seed)
    with files.atomic_directory(out, overwrite, files.export_record, "export folder") as tmp:
        artifacts = [_write_artifact(p, tmp, samples, reference, out, log) for p in plans]
        manifest = _manifest(source, serving, raw_pixels, softmax, input_dtype, artifacts,
                             checks, verify_samples if verify else 0)
        # The record of what this export wrote: --overwrite replaces exactly that.
        manifest["files"] = sorted(files.tree_entries(tmp) + [MANIFEST])
        files.write_json(os.path.join(tmp, MANIFEST), manifest)
    if tmp.kept:
        log(f"--overwrite: replaced the export in {out}; kept "
            f"{files.describe_entries(out, tmp.kept)}, which keras_preact did not write")
    return manifest


def _check_preprocessing(source, reference, n, seed):
    """The graph's own preprocessing against the network fed normalized inputs, as in
    training (the loaded model, at its own precision)."""
    import keras

    direct = keras.ops.convert_to_numpy(source.model.predict(
        sample_images(source, "test", n, seed=seed, raw=False), verbose=0,
        batch_size=64)).astype("float32")
    logits = reference[LOGITS]
    layer = source.model.layers[-1]
    activation = getattr(layer, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") != "linear":
        logits = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    return {"samples": int(len(direct)),
            "max_abs_diff": float(np.max(np.abs(direct - logits))),
            "top1_agreement": float(np.mean(direct.argmax(-1) == logits.argmax(-1)))}


def _plan(source, serving, formats, quantize, preprocessing_on, softmax, input_dtype,
          tflite_batch, representative_samples, raw_pixels, seed):
    shape = source.input_shape
    plans = []
    if "saved_model" in formats:
        plans.append(_Plan("saved_model", "tf_saved_model", "float32", "none", serving,
                           "tf_saved_model", _spec((None,) + shape, input_dtype),
                           extra={"signature": SIGNATURE, "batch": None}))
    if "tflite" in formats:
        representative = None
        if "int8" in quantize:
            representative = sample_images(source, "train", representative_samples,
                                           seed=seed + 1, raw=raw_pixels)
        for q in quantize:
            graph = serving
            if q == "int8" and input_dtype != "float32":
                # The converter quantises a float input itself (inference_input_type).
                graph = build_serving(source, preprocessing_on, softmax, "float32")
            extra = {"signature": SIGNATURE, "batch": tflite_batch}
            if q == "int8":
                extra["representative_samples"] = int(len(representative))
            plans.append(_Plan(
                TFLITE_FILES[q], "litert", {"none": "float32", "float16": "float16"}.get(q, "int8"),
                q, graph, "litert",
                _spec((tflite_batch,) + shape, "float32" if q == "int8" else input_dtype),
                options=_tflite_options(q, representative, raw_pixels, tflite_batch),
                extra=extra))
    if "onnx" in formats:
        plans.append(_Plan("model.onnx", "onnx", "float32", "none", serving, "onnx",
                           _spec((None,) + shape, input_dtype), extra={"batch": None}))
    return plans


def _write_artifact(plan, tmp, samples, reference, out, log):
    """Convert, verify through its runtime and describe one artifact; return its entry."""
    path = os.path.join(tmp, plan.relpath)
    with _quiet():
        plan.graph.export(path, format=plan.keras_format, verbose=False,
                          input_signature=plan.input_spec, **plan.options)
    files.fault_point("export.artifact")
    entry = {"path": plan.relpath, "format": plan.fmt, "quantization": plan.quantization,
             **file_record(tmp, plan.relpath), **plan.extra}
    if plan.fmt == "litert":
        entry["input"] = _tflite_input(path)
    if samples is None:
        entry["verification"] = "skipped"
    else:
        runtime = open_runtime(path, plan.fmt)
        with _quiet():
            got = runtime(samples)
        figures = compare(reference, got, plan.precision)
        figures["consumer"] = type(runtime).__doc__
        entry["verification"] = figures
        if not figures["passed"]:
            raise VerificationError(
                f"{plan.relpath} ({plan.fmt}, {plan.quantization}) does not reproduce the Keras "
                f"model: {figures}. Nothing was written to {out!r}.")
    log(f"  {plan.relpath}: {entry['bytes'] / 1e6:.2f} MB"
        + (f", {_summary(entry['verification'])}" if samples is not None else ""))
    return entry


def _summary(v):
    if v["criterion"] == "top1_agreement":
        return f"top-1 agreement {100 * v['top1_agreement']:.1f}% (>= {100 * MIN_TOP1_AGREEMENT:.0f}%)"
    return f"max |logit diff| {v['max_abs_diff_logits']:.2e} (<= {v['tolerance']:.0e})"


def _tflite_input(path):
    detail = _LiteRT(path).detail
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
        "checkpoint": source.checkpoint,
        "arch": source.arch,
        "builder": spec.builder_name if spec else None,
        **described,
        "dataset": source.dataset,
        "classes": source.classes,
        "input": {
            "name": INPUT_NAME, "shape": [None, *source.input_shape], "layout": "NHWC",
            "dtype": input_dtype,
            "values": "raw pixels, 0-255" if raw_pixels else
            ("normalized: (pixels - mean) / std" if source.normalization else "as the model"),
        },
        "outputs": {LOGITS: [None, source.classes],
                    **({PROBABILITIES: [None, source.classes]} if softmax else {})},
        "signature": SIGNATURE,
        "preprocessing": {
            "included": raw_pixels,
            "formula": "(float(images) - mean) / std, per channel, pixels on the 0-255 scale",
            "mean": list(source.normalization[0]) if source.normalization else None,
            "std": list(source.normalization[1]) if source.normalization else None,
        },
        "notes": list(source.notes),
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
