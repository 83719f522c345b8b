"""Inference benchmark: Keras against the exported artifacts, side by side in one run.

``infer(export_dir)`` times, on this machine, the Keras serving model (the
float32 network with its preprocessing, ``predict_on_batch``), the SavedModel
signature, every LiteRT variant and the ONNX model of an export folder written
by :func:`keras_preact.export.export_model`, each through the same runtime the
export was verified with (:func:`keras_preact.export.open_runtime`): median
latency at batch 1 and throughput at a larger batch, plus the artifact sizes.
Figures are printed, not asserted; the variants run in one process so that they
share the machine's load.
"""

import os
import statistics
import time

import numpy as np

from keras_preact import export, files


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
        source.normalisation = (manifest["preprocessing"]["mean"],
                                manifest["preprocessing"]["std"])
    model = export.build_serving(source, manifest["preprocessing"]["included"],
                                 manifest["softmax"], manifest["input"]["dtype"])
    return model.predict_on_batch


def infer(export_dir, batch=32, repeats=20, threads=None, serving=None, log=print):
    """Time every runtime of ``export_dir``; return rows of figures (and print them).

    ``threads`` sets the LiteRT and ONNX Runtime threads (default: every CPU);
    ``serving`` is the Keras model to time (default: rebuilt from the manifest's source).
    """
    manifest = files.read_json(os.path.join(export_dir, export.MANIFEST))
    threads = threads or os.cpu_count()
    shape = tuple(manifest["input"]["shape"][1:])
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
