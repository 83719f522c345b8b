"""Inference benchmark: Keras against the exported artifacts, side by side in one run.

``infer(export_dir)`` times, on this machine, the Keras serving model (the
float32 network with its preprocessing, ``predict_on_batch``), the SavedModel
signature, every LiteRT variant and the ONNX model of an export folder written
by :func:`keras_preact.export.export_model`: median latency at batch 1 and
throughput at a larger batch, plus the artifact sizes. Figures are printed, not
asserted; run the variants in one process so that they share the machine's load.
"""

import os
import statistics
import time

import numpy as np

from keras_preact import export


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
    if source_path.startswith("arch:") or not os.path.isfile(source_path):
        source = export.load_source(arch=manifest["arch"], classes=manifest["classes"],
                                    input_shape=manifest["input"]["shape"][1:])
    else:
        source = export.load_source(model=source_path)
    if manifest["preprocessing"]["mean"] is not None:
        source.normalisation = (manifest["preprocessing"]["mean"],
                                manifest["preprocessing"]["std"])
    model = export.build_serving(source, manifest["preprocessing"]["included"],
                                 manifest["softmax"], manifest["input"]["dtype"])
    return lambda x: model.predict_on_batch(x)


def _saved_model_runner(path):
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures[export.SIGNATURE]
    dtype = fn.structured_input_signature[1][export.INPUT_NAME].dtype.as_numpy_dtype
    return lambda x: fn(**{export.INPUT_NAME: tf.constant(x.astype(dtype))})


def _tflite_runner(path, batch, threads):
    interpreter = export.litert_interpreter(path, num_threads=threads)
    detail = interpreter.get_input_details()[0]
    if int(detail["shape"][0]) != batch:
        interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]],
                                        strict=False)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    outputs = [d["index"] for d in interpreter.get_output_details()]

    def run(x):
        interpreter.set_tensor(detail["index"], export.quantize_input(x, detail))
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in outputs]

    return run


def _onnx_runner(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    dtype = np.uint8 if feed.type == "tensor(uint8)" else np.float32
    return lambda x: session.run(None, {feed.name: x.astype(dtype)})


def infer(export_dir, batch=32, repeats=20, threads=None, serving=None, log=print):
    """Time every runtime of ``export_dir``; return rows of figures (and print them).

    ``serving`` is the Keras model to time (default: rebuilt from the manifest's source).
    """
    import json

    with open(os.path.join(export_dir, export.MANIFEST)) as f:
        manifest = json.load(f)
    threads = threads or os.cpu_count()
    shape = tuple(manifest["input"]["shape"][1:])
    rng = np.random.default_rng(0)
    images = {b: rng.integers(0, 256, (b, *shape)).astype("float32") for b in (1, batch)}
    keras_runner = serving.predict_on_batch if serving is not None else None
    runners = [("keras predict_on_batch", None, lambda b: _keras_runner(manifest))]
    for a in manifest["artifacts"]:
        path = os.path.join(export_dir, a["path"])
        if a["format"] == "tf_saved_model":
            runners.append((a["path"], a, lambda b, p=path: _saved_model_runner(p)))
        elif a["format"] == "litert":
            runners.append((f"{a['path']} ({a['quantization']})", a,
                            lambda b, p=path: _tflite_runner(p, b, threads)))
        elif a["format"] == "onnx":
            runners.append((a["path"], a, lambda b, p=path: _onnx_runner(p)))
    rows = []
    log(f"{manifest['arch'] or manifest['source']}: input {list(shape)}, "
        f"{os.cpu_count()} CPU threads, median of {repeats} runs")
    log(f"{'runtime':34s} {'batch 1 (ms)':>13s} {f'batch {batch} (img/s)':>19s} {'size (MB)':>10s}")
    for name, artifact, make in runners:
        row = {"runtime": name, "bytes": artifact["bytes"] if artifact else None}
        try:
            if artifact is None:
                keras_runner = keras_runner or make(1)
                run1 = run_b = keras_runner
            else:
                run1, run_b = make(1), make(batch)
            row["latency_ms"] = 1e3 * median_seconds(lambda: run1(images[1]), repeats)
            row["throughput"] = batch / median_seconds(lambda: run_b(images[batch]),
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
