"""Benchmarks that print figures: inference per runtime, and training speed.

:func:`train` times training of a network, unrolled and scanned (``scan_units``), beside
the plain-Keras reference of ``../shared/bench`` (``anchor_keras.py``): build time, first
step (tracing and compilation), steady images/s and peak memory, each variant in a fresh
process, with ratios. The rest of this module is the inference benchmark:

``infer(export_dir)`` times, on this machine, the Keras serving model (the
float32 network with its preprocessing, ``predict_on_batch``), the SavedModel
signature, every LiteRT variant and the ONNX model of an export folder written
by :func:`keras_preact.deploy.export.export_model`, each through the same runtime the
export was verified with (:func:`keras_preact.deploy.export.open_runtime`): median
latency at batch 1 and throughput at a larger batch, plus the artifact sizes.
Figures are printed, not asserted; the variants run in one process so that they
share the machine's load.
"""

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_preact.deploy import export
from keras_preact.io import files
from keras_preact.vocab._validation import check_memory

# Memory per image of a batch, for check_batch: its pixels (drawn as int64, kept as float32:
# 12 bytes a value) and, per input pixel, the live activations, bounded by 6 tensors of 64
# float32 channels at full resolution (the widest layers: the CIFAR bottleneck nets' and
# resnet18_cifar's; the ImageNet nets' hold 16 channels per input pixel). Measured
# (predict_on_batch, TensorFlow on a CPU): resnet20 0.21 MB and resnet164 1.0 MB per 32x32
# image; this bounds them at 1.6 MB.
PIXEL_BYTES, ACTIVATION_BYTES = 12, 6 * 64 * 4


def check_batch(shape, batch, steps=None):
    """Refuse (one line naming the largest that fits) a ``--batch`` of images of ``shape``
    whose pixels and activations need more memory than is available, before any is
    allocated: a runtime that runs out of memory crashes the process (segmentation fault)
    instead of raising. Inference holds the batch and one more image; training (``steps``)
    holds ``steps`` batches of data."""
    shape = tuple(int(d) for d in shape)
    pixels, activations = PIXEL_BYTES * math.prod(shape), ACTIVATION_BYTES * shape[0] * shape[1]
    what = f"{'x'.join(map(str, shape))} images and activations"
    check_memory("--batch", batch, pixels + activations, fixed=0 if steps else pixels,
                 what=what)
    if steps:
        check_memory("--steps", steps, batch * pixels, fixed=batch * activations, what=what)


def check_export(export_dir, batch):
    """``(manifest, image shape)`` of the export in ``export_dir``, refusing (one line) a
    folder that is not one and a ``batch`` that does not fit in memory; needs no backend."""
    path = os.path.join(export_dir, export.MANIFEST)
    if not os.path.isfile(path):
        raise ValueError(f"{export_dir!r} holds no {export.MANIFEST}: give a folder written by "
                         "keras-preact export.")
    manifest = files.read_json(path)
    try:
        shape = manifest["input"]["shape"][1:]
    except (KeyError, TypeError):
        shape = None
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(d, int) and d > 0 for d in shape)):
        raise ValueError(f"{path} names no input shape: export again with keras-preact export.")
    check_batch(shape, batch)
    return manifest, tuple(shape)


def median_seconds(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _keras_runner(manifest):
    source_path = manifest["source"]
    shape = manifest["input"]["shape"][1:]
    if source_path.startswith("arch:") or not os.path.isfile(source_path):
        source = export.load_source(arch=manifest["arch"], classes=manifest["classes"],
                                    input_shape=shape)
    else:
        source = export.load_source(model=source_path, input_shape=shape)
    if manifest["preprocessing"]["mean"] is not None:
        source.normalization = (manifest["preprocessing"]["mean"],
                                manifest["preprocessing"]["std"])
    model = export.build_serving(source, manifest["preprocessing"]["included"],
                                 manifest["softmax"], manifest["input"]["dtype"])
    return model.predict_on_batch


def infer(export_dir, batch=32, repeats=20, threads=None, serving=None, log=print):
    """Time every runtime of ``export_dir``; return rows of figures (and print them).

    ``threads`` sets the LiteRT and ONNX Runtime threads (default: every CPU);
    ``serving`` is the Keras model to time (default: rebuilt from the manifest's source).
    """
    manifest, shape = check_export(export_dir, batch)
    threads = threads or os.cpu_count()
    rng = np.random.default_rng(0)
    images = {b: rng.integers(0, 256, (b, *shape)).astype("float32") for b in (1, batch)}
    runners = [("keras predict_on_batch", None,
                lambda: serving.predict_on_batch if serving is not None
                else _keras_runner(manifest))]
    for a in manifest["artifacts"]:
        label = a["path"] + (f" ({a['quantization']})" if a["format"] == "litert" else "")
        runners.append((label, a, lambda p=os.path.join(export_dir, a["path"]), f=a["format"]:
                        export.open_runtime(p, f, threads=threads)))
    log(f"{manifest['arch'] or manifest['source']}: input {list(shape)}, {threads} threads "
        f"(LiteRT, ONNX Runtime), median of {repeats} runs; fixed-batch LiteRT files run "
        "their own batch at a time")
    log(f"{'runtime':34s} {'batch 1 (ms)':>13s} {f'batch {batch} (img/s)':>19s} {'size (MB)':>10s}")
    rows = []
    for name, artifact, make in runners:
        row = {"runtime": name, "bytes": artifact["bytes"] if artifact else None}
        try:
            run = make()
            row["latency_ms"] = 1e3 * median_seconds(lambda: run(images[1]), repeats)
            row["throughput"] = batch / median_seconds(lambda: run(images[batch]),
                                                       max(3, repeats // 4))
        except Exception as e:  # noqa: BLE001 - report and go on with the other runtimes
            row["error"] = f"{type(e).__name__}: {e}"[:200]
        rows.append(row)
        size = f"{row['bytes'] / 1e6:10.2f}" if row["bytes"] else f"{'-':>10s}"
        if "error" in row:
            log(f"{name:34s} failed: {row['error']}")
        else:
            log(f"{name:34s} {row['latency_ms']:13.2f} {row['throughput']:19.1f} {size}")
    return rows


# -- training: build, first step, steady speed, peak memory ------------------------------
# The references (../shared/bench/anchor_keras.py, plain Keras; anchor_torch.py, plain PyTorch)
# name the same networks so.
ANCHOR_ARCHS = {"resnet110": "preact110", "resnet164": "preact164", "resnet1001": "preact1001"}
# reference -> (its file in ../shared/bench, the variable that may say where it is instead)
ANCHORS = {"keras": ("anchor_keras.py", "KERAS_PREACT_ANCHOR"),
           "torch": ("anchor_torch.py", "KERAS_PREACT_ANCHOR_TORCH")}


def anchor_path(kind="keras"):
    """The reference script of ``kind``, or None where this checkout has none beside it."""
    name, variable = ANCHORS[kind]
    # (beside the current folder, or beside the checkout this module runs from, if any)
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for path in (os.environ.get(variable), os.path.join("..", "shared", "bench", name),
                 os.path.join(checkout, "..", "shared", "bench", name)):
        if path and os.path.isfile(path):
            return os.path.abspath(path)
    return None


def _anchor_module(path):
    import importlib.util

    loader = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def torch_timings(model, batch, steps, shape, classes):
    """``fit_timings`` for a plain PyTorch module: the same 3 epochs of synthetic data, SGD
    with momentum 0.9 and the paper's weight decay, float32, eager, on the GPU if any."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    height, width, channels = shape
    x = torch.randn(batch * steps, channels, height, width, generator=generator).to(device)
    y = torch.randint(0, classes, (batch * steps,), generator=generator).to(device)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(0, batch * steps, batch):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x[i:i + batch]), y[i:i + batch])
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[0], min(times[1:])


def fit_timings(model, batch, steps, shape, classes, jit_compile=True):
    """Compile ``model`` as the reference does and fit 3 epochs of ``steps`` batches of
    synthetic data; return (first epoch seconds, best later epoch seconds)."""
    import keras

    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch * steps, *shape), dtype=np.float32)
    y = rng.integers(0, classes, batch * steps)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=batch, epochs=3, verbose=0, callbacks=[Timer()])
    return times[0], min(times[1:])


def _train_child(spec):
    """One measurement in this process (a fresh one per variant: peak memory is its own)."""
    import keras

    keras.mixed_precision.set_global_policy(spec["precision"])
    start = time.perf_counter()
    if spec["kind"] == "anchor_torch":  # (the references' CIFAR nets: 32x32x3, 10 classes)
        depth = int(ANCHOR_ARCHS[spec["arch"]][len("preact"):])
        model = _anchor_module(spec["anchor"]).Net(depth, bottleneck=depth != 110)
        build = time.perf_counter() - start
        first, steady = torch_timings(model, spec["batch"], spec["steps"], (32, 32, 3), 10)
        return _report(spec, build, first, steady)
    if spec["kind"] == "anchor":
        depth = int(ANCHOR_ARCHS[spec["arch"]][len("preact"):])
        model = _anchor_module(spec["anchor"]).cifar_preact(depth, bottleneck=depth != 110)
        jit = True  # as the reference compiles
    else:
        from keras_preact.models import registry

        model = registry.get_model(spec["arch"], classifier_activation=None,
                                   scan_units=spec["scan"], remat=spec["remat"],
                                   kernel_regularizer=keras.regularizers.L2(5e-5))
        jit = spec["jit"]
    build = time.perf_counter() - start
    shape, classes = tuple(model.input_shape[1:]), model.output_shape[-1]
    first, steady = fit_timings(model, spec["batch"], spec["steps"], shape, classes, jit)
    _report(spec, build, first, steady)


def _report(spec, build, first, steady):
    import keras

    step = steady / spec["steps"]
    out = {"build_s": build, "first_step_s": first - (spec["steps"] - 1) * step,
           "images_per_s": spec["batch"] / step, "step_ms": 1e3 * step}
    if keras.backend.backend() == "jax" and spec["kind"] != "anchor_torch":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            out["device_peak_gb"] = stats["peak_bytes_in_use"] / 2**30
    print(json.dumps(out), flush=True)


def _run_child(spec, timeout):
    """Run one measurement in a child process; its figures and its peak resident memory."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", "keras_preact.deploy.benchmark", "train-child",
                                 json.dumps(spec)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                return {"error": f"stopped after {timeout} s"}
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        lines = out.read().strip().splitlines()
    peak = usage.ru_maxrss / 2**20  # KiB on Linux
    for line in reversed(lines):
        if line.startswith("{"):
            return {**json.loads(line), "peak_rss_gb": peak}
    last = lines[-1] if lines else f"exit code {proc.returncode}"
    if proc.returncode < 0 or proc.returncode == 137:
        last = f"killed (signal {-proc.returncode}), peak memory {peak:.1f} GB"
    return {"error": last[:160], "peak_rss_gb": peak}


def train(arch, batch=8, steps=3, forms=("unrolled", "scanned"), remat=False,
          precision="float32", jit="auto", reference=True, timeout=600, log=print):
    """Time training of ``arch`` in each of ``forms`` (``"unrolled"``, ``"scanned"``) and,
    with ``reference``, the plain-Keras reference network, each in its own process, one
    after the other on this machine; print a table with ratios to the first row."""
    from keras_preact.models import registry

    check_batch(registry.get_spec(arch).input_shape, batch, steps)
    import keras

    from keras_preact.layers.devices import compiles_by_default

    backend = keras.backend.backend()
    if jit == "auto":  # as train.py
        jit = compiles_by_default()
    jit = jit in (True, "on")
    specs = []
    # On torch, plain PyTorch comes first (the base of the ratios), then plain Keras.
    for kind in (("torch", "keras") if backend == "torch" else ("keras",)) if reference else ():
        anchor, name = anchor_path(kind), ANCHORS[kind][0]
        if anchor and arch in ANCHOR_ARCHS:
            label = f"plain {'PyTorch' if kind == 'torch' else 'Keras'} (reference)"
            specs.append((label, {"kind": "anchor_torch" if kind == "torch" else "anchor",
                                  "anchor": anchor}))
        else:
            log(f"(no {name} reference: "
                f"{'not found' if not anchor else arch + ' is not one of ' + ', '.join(ANCHOR_ARCHS)})")
    for form in forms:
        label = f"keras_preact {form}" + (" + remat" if remat and form == "scanned" else "")
        specs.append((label, {"kind": "ours", "scan": form == "scanned",
                              "remat": bool(remat and form == "scanned"), "jit": jit}))
    log(f"{arch} training on {backend} ({_device_name()}), batch {batch}, {precision}, "
        f"3 epochs of {steps} steps on synthetic data, each variant in its own process; "
        f"keras_preact jit_compile={jit}, the plain-Keras reference always jit-compiles"
        + (", plain PyTorch eager in float32" if backend == "torch" else ""))
    log(f"{'variant':34s} {'build (s)':>10s} {'first step (s)':>15s} {'images/s':>10s} "
        f"{'peak RSS (GB)':>14s}")
    rows, base = [], None
    for label, spec in specs:
        spec = {**spec, "arch": arch, "batch": batch, "steps": steps, "precision": precision}
        row = {"variant": label, **_run_child(spec, timeout)}
        rows.append(row)
        if "error" in row:
            log(f"{label:34s} failed: {row['error']}")
            continue
        base = base or row
        ratios = ("" if base is row else "   ratios to " + base["variant"] + ": " + ", ".join(
            f"{what} {row[key] / base[key]:.2f}x" for what, key in (
                ("build", "build_s"), ("first step", "first_step_s"),
                ("speed", "images_per_s"), ("memory", "peak_rss_gb"))))
        device = f", device peak {row['device_peak_gb']:.2f} GB" if "device_peak_gb" in row else ""
        log(f"{label:34s} {row['build_s']:10.1f} {row['first_step_s']:15.1f} "
            f"{row['images_per_s']:10.1f} {row['peak_rss_gb']:14.2f}{ratios}{device}")
    return rows


def _device_name():
    from keras_preact.layers.devices import has_gpu

    return "GPU" if has_gpu() else f"CPU, {os.cpu_count()} cores"


if __name__ == "__main__" and sys.argv[1:2] == ["train-child"]:
    _train_child(json.loads(sys.argv[2]))
