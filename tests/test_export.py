"""Deployment: every artifact is loaded by its real consumer and matches the Keras model."""

import json
import os
import re

import numpy as np
import pytest

pytestmark = pytest.mark.tf_only

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from keras_preact import build_resnet, export, files  # noqa: E402
from keras_preact.data import digits_arrays  # noqa: E402

from conftest import call_script, python, randomise_bn, run_script  # noqa: E402

MEAN, STD = (78.0, 78.0, 78.0), (82.0, 82.0, 82.0)  # about digits' statistics
ALL_QUANT = ("none", "float16", "dynamic", "int8")


def litert(path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=path).get_signature_runner("serving_default")


def small_net(kind, **kwargs):
    """Small members of each family, and a deep stack of identity-shortcut units."""
    kwargs = dict(classes=10, classifier_activation=None, **kwargs)
    if kind == "cifar":
        return build_resnet((1, 1, 1), (8, 16, 32), (1, 2, 2), "bottleneck", "cifar",
                            input_shape=(32, 32, 3), **kwargs)
    if kind == "imagenet":
        return build_resnet((1, 1, 1, 1), (8, 16, 32, 64), (1, 2, 2, 2), "basic", "imagenet",
                            input_shape=(32, 32, 3), stride_on="3x3", **kwargs)
    if kind == "deep":  # ResNet-1001's layout (bottleneck, 9n+2, identity stack) at n=4, width 4
        return build_resnet((4, 4, 4), (4, 8, 16), (1, 2, 2), "bottleneck", "cifar",
                            input_shape=(32, 32, 3), **kwargs)
    return build_resnet((1, 1, 1), (4, 8, 16), (1, 2, 2), "basic", "cifar",
                        input_shape=(16, 16, 3), **kwargs)


def fit_briefly(model, epochs=4):
    """A few epochs on digits, so that the classes (and int8 agreement) mean something."""
    images, labels = digits_arrays("train")
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit((images - np.float32(MEAN)) / np.float32(STD), labels, batch_size=64,
              epochs=epochs, verbose=0)
    return model


def source_for(model, dataset="digits"):
    return export.Source(model, origin="test", dataset=dataset, normalization=(MEAN, STD))


ALL_FORMATS = ["--formats", "saved_model", "tflite", "onnx", "--quantize", *ALL_QUANT]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, request):
    """Export (once per module) a trained net of each family to every format and variant.

    ``cifar`` is the digits training run (ResNet-20) exported by scripts/export.py; the
    others are small nets trained for a few epochs on digits and exported in-process.
    """
    cache = {}

    def get(kind):
        if kind in cache:
            return cache[kind]
        out = str(tmp_path_factory.mktemp(kind) / "artifact")
        if kind == "cifar":
            run_dir, _ = request.getfixturevalue("digits_run")
            result = run_script("export.py", "--model", run_dir, *ALL_FORMATS, "--out", out)
            assert result.returncode == 0, result.stderr[-3000:]
            assert f"wrote {out}" in result.stdout
            model = keras.saving.load_model(os.path.join(run_dir, "last.keras"), compile=False,
                                            safe_mode=True)
            with open(os.path.join(out, "manifest.json")) as f:
                manifest = json.load(f)
        else:
            # Six epochs for the deep net: at four, its int8 agreement sat at the 95% edge
            # (91-95% over three seeds).
            model = fit_briefly(small_net(kind), epochs=6 if kind == "deep" else 4)
            manifest = export.export_model(source_for(model), out, formats=export.FORMATS,
                                           quantize=ALL_QUANT, representative_samples=100,
                                           verify_samples=100)
        cache[kind] = (model, out, manifest)
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", ["cifar", "imagenet", "deep"])
def test_every_format_and_variant_within_tolerance(kind, exports, rng):
    model, out, manifest = exports(kind)
    by_path = {a["path"]: a for a in manifest["artifacts"]}
    assert sorted(by_path) == ["model.onnx", "model.tflite", "model_dynamic.tflite",
                               "model_float16.tflite", "model_int8.tflite", "saved_model"]
    for a in by_path.values():
        v = a["verification"]
        assert v["passed"] and v["samples"] >= 100, a
        assert os.path.exists(os.path.join(out, a["path"]))
    # The issue's tolerances, absolute: these nets' logits are of order 1-10.
    for path in ("saved_model", "model.tflite", "model.onnx"):
        assert by_path[path]["verification"]["max_abs_diff_logits"] < 1e-4, by_path[path]
    assert by_path["model_float16.tflite"]["verification"]["max_abs_diff_logits"] < 1e-2 * max(
        1.0, by_path["model_float16.tflite"]["verification"]["logit_scale"])
    for path in ("model_dynamic.tflite", "model_int8.tflite"):
        assert by_path[path]["verification"]["top1_agreement"] >= 0.95
    assert by_path["model_int8.tflite"]["input"]["dtype"] == "uint8"
    assert by_path["model.tflite"]["input"]["shape"] == [1, *model.input_shape[1:]]

    # Independently of the library's checks: raw pixels through each artifact give the
    # outputs of the Keras network fed normalized inputs, as in training.
    images = digits_arrays("test")[0][:16].astype("float32")
    mean, std = (np.float32(manifest["preprocessing"][k]) for k in ("mean", "std"))
    expected = keras.ops.convert_to_numpy(model((images - mean) / std, training=False))
    serve = tf.saved_model.load(os.path.join(out, "saved_model")).signatures["serving_default"]
    got = serve(images=tf.constant(images))
    np.testing.assert_allclose(got["logits"].numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(got["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
    runner = litert(os.path.join(out, "model.tflite"))
    tflite = np.concatenate([runner(images=x[None])["logits"] for x in images])
    np.testing.assert_allclose(tflite, expected, atol=1e-4)
    import onnxruntime

    session = onnxruntime.InferenceSession(os.path.join(out, "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"images": images})[0]
    np.testing.assert_allclose(onnx_logits, expected, atol=1e-4)
    int8 = litert(os.path.join(out, "model_int8.tflite"))
    int8_classes = [int8(images=x[None].astype("uint8"))["logits"].argmax() for x in images]
    assert np.mean(np.array(int8_classes) == expected.argmax(-1)) >= 14 / 16


def test_manifest_describes_the_artifacts(exports):
    model, out, manifest = exports("imagenet")
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f) == manifest
    assert manifest["placement"] == "full_preact" and manifest["shortcut"] == {"name": "identity"}
    assert manifest["classes"] == 10 and manifest["residual_units"] == 4
    assert manifest["input"] == {"name": "images", "shape": [None, 32, 32, 3], "layout": "NHWC",
                                 "dtype": "float32", "values": "raw pixels, 0-255"}
    assert manifest["preprocessing"]["mean"] == list(MEAN) and manifest["preprocessing"]["included"]
    assert manifest["verification"]["preprocessing"]["top1_agreement"] == 1.0
    assert manifest["versions"]["keras"] == keras.__version__
    assert manifest["versions"]["tensorflow"] == tf.__version__
    import hashlib

    for a in manifest["artifacts"]:
        if a["path"].endswith((".tflite", ".onnx")):
            with open(os.path.join(out, a["path"]), "rb") as f:
                blob = f.read()
            assert a["bytes"] == len(blob) and a["sha256"] == hashlib.sha256(blob).hexdigest()
        else:
            files = a["files"]
            assert "saved_model/saved_model.pb" in files
            assert a["bytes"] == sum(v["bytes"] for v in files.values())


def test_saved_model_cli_lists_the_signature(exports):
    _, out, _ = exports("imagenet")
    # The saved_model_cli command, run as its module.
    result = python("-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir",
                    os.path.join(out, "saved_model"), "--all")
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    default = text[text.index("signature_def['serving_default']"):]
    assert "inputs['images'] tensor_info:" in default
    assert "shape: (-1, 32, 32, 3)" in default and "dtype: DT_FLOAT" in default
    assert "outputs['logits'] tensor_info:" in default
    assert "outputs['probabilities'] tensor_info:" in default
    assert "shape: (-1, 10)" in default


VARIANTS = [  # every placement (Fig. 4) and every shortcut (Fig. 2) at least once
    ("original", "constant_scaling", "B"),
    ("bn_after_addition", "exclusive_gating", "B"),
    ("relu_before_addition", "shortcut_only_gating", "A"),
    ("relu_only_preact", "conv1x1", "B"),
    ("full_preact", "dropout", "B"),
    ("full_preact", "identity", "C"),
]


@pytest.mark.parametrize("placement,shortcut,projection", VARIANTS)
def test_every_placement_and_shortcut_exports_to_tflite(tmp_path, rng, placement, shortcut,
                                                        projection):
    model = small_net("tiny", placement=placement, shortcut=shortcut, projection=projection)
    randomise_bn(model, rng)
    manifest = export.export_model(source_for(model, None), str(tmp_path / "a"),
                                   formats=["tflite"], verify_samples=16)
    (artifact,) = manifest["artifacts"]
    assert artifact["verification"]["passed"], artifact
    assert artifact["verification"]["max_abs_diff_logits"] < 1e-4
    assert manifest["placement"] == placement and manifest["shortcut"]["name"] == shortcut


def test_mixed_precision_model_exports_a_runnable_float32_artifact(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_net("tiny")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[2].compute_dtype == "float16"
    path = str(tmp_path / "mp.keras")
    model.save(path)
    source = export.load_source(model=path, normalization=(MEAN, STD))
    manifest = export.export_model(source, str(tmp_path / "a"), formats=["tflite"],
                                   verify_samples=16)
    v = manifest["artifacts"][0]["verification"]
    # The artifact runs in the interpreter (no Flex ops) and matches the float32 rebuild;
    # the float16 original agrees on the classes.
    assert v["passed"] and v["max_abs_diff_logits"] < 1e-4
    assert manifest["verification"]["preprocessing"]["top1_agreement"] >= 0.9


def test_unsafe_keras_file_is_refused(tmp_path):
    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    path = str(tmp_path / "lambda.keras")
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="loading it would run code it carries.*safe_mode=True"):
        export.load_source(model=path)


def test_failure_mid_export_leaves_nothing(tmp_path, monkeypatch):
    model = small_net("tiny")
    target = tmp_path / "art"

    def boom(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export, "_tflite_input", boom)  # after the SavedModel and .tflite
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.export_model(source_for(model, None), str(target), verify_samples=8)
    assert os.listdir(tmp_path) == []


def test_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    model = small_net("tiny")
    real = export._LiteRT.__call__
    monkeypatch.setattr(export._LiteRT, "__call__",
                        lambda self, images: {k: v + 1e-3 for k, v in real(self, images).items()})
    with pytest.raises(export.VerificationError, match="does not reproduce the Keras model"):
        export.export_model(source_for(model, None), str(tmp_path / "art"), verify_samples=8)
    assert os.listdir(tmp_path) == []


def test_existing_target_needs_overwrite_and_survives_a_failed_overwrite(tmp_path, monkeypatch):
    model = small_net("tiny")
    target = str(tmp_path / "art")
    export.export_model(source_for(model, None), target, formats=["saved_model"], verify_samples=8)
    with open(os.path.join(target, "manifest.json"), "rb") as f:
        before = f.read()
    with pytest.raises(files.RefusedError, match="already exists; pass --overwrite"):
        export.export_model(source_for(model, None), target, formats=["tflite"], verify_samples=8)

    def boom(*args, **kwargs):
        raise RuntimeError("converter crashed")

    with monkeypatch.context() as m:
        m.setattr(export, "_tflite_input", boom)
        with pytest.raises(RuntimeError):
            export.export_model(source_for(model, None), target, formats=["tflite"],
                                verify_samples=8, overwrite=True)
    with open(os.path.join(target, "manifest.json"), "rb") as f:
        assert f.read() == before
    assert sorted(os.listdir(tmp_path)) == ["art"]
    manifest = export.export_model(source_for(model, None), target, formats=["tflite"],
                                   verify_samples=8, overwrite=True)
    assert sorted(os.listdir(target)) == ["manifest.json", "model.tflite"]
    assert [a["path"] for a in manifest["artifacts"]] == ["model.tflite"]
    assert sorted(os.listdir(tmp_path)) == ["art"]
    # Files honour the umask like any other file, so a serving user can read them.
    assert os.stat(target).st_mode & 0o777 == 0o777 & ~_umask()
    for name in os.listdir(target):
        assert os.stat(os.path.join(target, name)).st_mode & 0o777 == 0o666 & ~_umask()



def test_overwrite_replaces_exactly_what_the_export_recorded(tmp_path):
    """The user's files at every level of an export survive --overwrite (hard-linked into the
    new folder), and it says so; a file where the new export writes, or an export of an
    older version (no record of its files), is refused with nothing changed."""
    model = small_net("tiny")
    target = tmp_path / "art"
    first = export.export_model(source_for(model, None), str(target), formats=["saved_model"],
                                verify_samples=8)
    assert "saved_model/variables/" in first["files"] and "manifest.json" in first["files"]
    assert set(first["files"]) == set(files.tree_entries(str(target)))
    mine = {"notes.txt": "top", "saved_model/mine.txt": "in an artifact",
            "saved_model/variables/mine2.txt": "deeper", "extra/sub/data.csv": "a folder"}
    for rel, text in mine.items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_text(text)
    said = []
    second = export.export_model(source_for(model, None), str(target),
                                 formats=["saved_model", "tflite"], verify_samples=8,
                                 overwrite=True, log=said.append)
    for rel, text in mine.items():
        assert (target / rel).read_text() == text
    assert "kept 'extra/', 'notes.txt', 'saved_model/mine.txt', " \
           "'saved_model/variables/mine2.txt'" in said[-1]
    assert not set(mine) & set(second["files"]) and "model.tflite" in second["files"]
    assert sorted(os.listdir(tmp_path)) == ["art"]

    before = sorted(files.tree_entries(str(target)))
    (target / "model.tflite").unlink()  # recorded, but now the user's file sits there
    (target / "model.tflite").write_text("the user's")
    files.write_json(str(target / "manifest.json"),
                     {**second, "files": [f for f in second["files"] if f != "model.tflite"]})
    with pytest.raises(files.RefusedError, match="model.tflite', which keras_preact did not "
                       "write, is where the new export writes"):
        export.export_model(source_for(model, None), str(target), formats=["tflite"],
                            verify_samples=8, overwrite=True)
    assert sorted(files.tree_entries(str(target))) == before
    assert (target / "model.tflite").read_text() == "the user's"

    files.write_json(str(target / "manifest.json"), {"manifest_version": 1, "artifacts": []})
    with pytest.raises(files.RefusedError, match="an older keras_preact, which kept no record "
                       "of its files, so 'extra/', 'manifest.json', 'model.tflite'"):
        export.check_target(str(target), overwrite=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_overwrite_never_replaces_a_folder_of_other_files(tmp_path, capsys):
    target = tmp_path / "thesis"
    (target / "sub").mkdir(parents=True)
    (target / "thesis.tex").write_text("years of work")
    (target / "sub" / "data.csv").write_text("1,2")
    code, _, err = call_script("export", ["--arch", "resnet20", "--out", str(target),
                                          "--overwrite"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Refusing to overwrite" in err and "holds no keras_preact manifest.json" in err
    assert "'sub/', 'thesis.tex' would be lost" in err
    assert (target / "thesis.tex").read_text() == "years of work"
    assert (target / "sub" / "data.csv").read_text() == "1,2"


def test_killed_export_leaves_no_artifact(tmp_path):
    out = str(tmp_path / "killed")
    result = run_script("export.py", "--arch", "resnet20", "--dataset", "digits", "--formats",
                        "saved_model", "tflite", "--verify-samples", "16", "--out", out,
                        env={"KERAS_PREACT_FAULT": "export.artifact@1"})  # the SavedModel is written
    assert result.returncode == -9, result.stderr[-2000:]
    assert not os.path.exists(out)  # only the hidden temporary folder remains
    (partial,) = [n for n in os.listdir(tmp_path) if n.startswith(".killed.tmp-")]
    assert os.path.exists(os.path.join(tmp_path, partial, "saved_model", "saved_model.pb"))
    # The next export to the same target cleans up what the killed one left.
    export.export_model(source_for(small_net("tiny"), None), out, formats=["tflite"],
                        verify_samples=8)
    assert sorted(os.listdir(tmp_path)) == ["killed"]


def test_one_writer_per_export_target(tmp_path):
    out = str(tmp_path / "art")
    with files.Lock(str(tmp_path / ".art.lock"), "export target"):
        with pytest.raises(files.Busy, match=f"in use by process {os.getpid()} on"):
            export.export_model(source_for(small_net("tiny"), None), out, formats=["tflite"],
                                verify_samples=8)
    assert os.listdir(tmp_path) == []


def test_a_plain_keras_model_says_it_has_no_normalization(tmp_path, capsys):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    path = str(tmp_path / "plain.keras")
    keras.Model(inputs, outputs).save(path)
    code, out, err = call_script("export", ["--model", path, "--formats", "tflite",
                                            "--verify-samples", "8", "--out",
                                            str(tmp_path / "art")], capsys)
    assert code == 0, err
    assert "note: this model has no keras_preact residual units" in out
    assert "note: no training normalization is known for this model" in out
    manifest = files.read_json(str(tmp_path / "art" / "manifest.json"))
    assert not manifest["preprocessing"]["included"] and len(manifest["notes"]) == 2
    assert manifest["input"]["values"] == "as the model"


@pytest.mark.parametrize("argv,message", [
    (["--arch", "resnet20", "--formats", "pb"], "invalid choice: 'pb' (choose from 'saved_model', 'tflite', 'onnx')"),
    (["--arch", "resnet20", "--quantize", "int4"], "invalid choice: 'int4' (choose from 'none', 'float16', 'dynamic', 'int8')"),
    (["--arch", "resnet21"], "Unknown arch 'resnet21'. Valid choices: 'resnet20'"),
    (["--model", "/nonexistent/run"], "must be a training run directory or a .keras file"),
    (["--model", "/nonexistent/m.keras"], "No such .keras file"),
    (["--arch", "resnet20", "--formats", "saved_model", "--quantize", "int8"], "add tflite to --formats"),
    (["--arch", "resnet20", "--dataset", "mnist"], "Unknown dataset 'mnist'. Valid choices:"),
    (["--arch", "resnet20", "--mean", "1"], "--mean and --std go together"),
    (["--model", "x.keras", "--arch", "resnet20"], "not allowed with argument"),
    (["--arch", "resnet20", "--input-dtype", "uint8"], "needs the preprocessing"),
    (["--arch", "resnet20", "--tflite-batch", "-1"], "must be an integer >= 0, got -1"),
    (["--arch", "resnet20", "--verify-samples", "0"], "must be an integer >= 1, got 0"),
])
def test_script_errors_name_the_valid_choices(argv, message, capsys, tmp_path):
    code, _, err = call_script("export", [*argv, "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert os.listdir(tmp_path) == []


def test_damaged_keras_files_are_named_as_such(tmp_path, capsys):
    garbage = tmp_path / "x.keras"
    garbage.write_bytes(b"not a zip")
    code, _, err = call_script("export", ["--model", str(garbage), "--out",
                                          str(tmp_path / "o")], capsys)
    assert code == 2 and f"'{garbage}' is not a readable .keras file: it is damaged" in err


def test_onnx_needs_its_extra_and_says_how_to_get_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    with pytest.raises(export.ExportError,
                       match=r'ONNX export needs tf2onnx: pip install "keras_preact\[export\]" '
                             r'\(in a checkout: pip install "\.\[export\]"\)\.'):
        export.check_formats(["onnx"], ["none"])


def test_end_to_end_digits_int8_accuracy(exports, digits_run):
    """Train on digits (conftest's run), export with scripts/export.py, compare accuracy."""
    keras_model, out, manifest = exports("cifar")
    run_dir, _ = digits_run
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert manifest["arch"] == "resnet20" and manifest["dataset"] == "digits"
    assert manifest["source"] == os.path.join(run_dir, "last.keras") and manifest["trained"]
    assert manifest["preprocessing"]["mean"] == config["normalization"]["mean"]
    int8 = {a["path"]: a for a in manifest["artifacts"]}["model_int8.tflite"]
    assert int8["representative_samples"] == 200 and int8["verification"]["samples"] == 200
    # Calibrated on raw pixels: a uint8 camera pipeline feeds the artifact as is.
    assert int8["input"]["dtype"] == "uint8"
    assert int8["input"]["quantization"]["scale"] == pytest.approx(1.0, abs=0.02)
    assert abs(int8["input"]["quantization"]["zero_point"]) <= 1

    images, labels = digits_arrays("test")
    mean, std = (np.float32(config["normalization"][k]) for k in ("mean", "std"))
    keras_pred = keras_model.predict((images - mean) / std, verbose=0).argmax(-1)
    runner = litert(os.path.join(out, "model_int8.tflite"))
    tflite_pred = np.array([runner(images=x[None])["logits"].argmax() for x in images])
    keras_acc, tflite_acc = np.mean(keras_pred == labels), np.mean(tflite_pred == labels)
    with open(os.path.join(run_dir, "results.json")) as f:
        assert 100 * (1 - keras_acc) == pytest.approx(json.load(f)["test_error"], abs=0.01)
    assert keras_acc >= 0.95
    assert abs(keras_acc - tflite_acc) <= 0.01, (keras_acc, tflite_acc)
    print(f"digits test accuracy: Keras {100 * keras_acc:.2f}%, int8 LiteRT {100 * tflite_acc:.2f}%")

    # The inference benchmark times what the export wrote.
    bench = run_script("benchmark.py", "infer", "--export-dir", out, "--repeats", "3",
                       "--batch", "8")
    assert bench.returncode == 0, bench.stderr[-3000:]
    for row in ("keras predict_on_batch", "saved_model", "model.tflite", "model_int8.tflite"):
        assert row in bench.stdout, bench.stdout


def test_a_run_still_training_is_exported_saying_which_epoch(digits_run, tmp_path):
    import shutil

    run_dir = str(tmp_path / "run")
    shutil.copytree(digits_run[0], run_dir)
    os.remove(os.path.join(run_dir, "results.json"))
    files.write_json(os.path.join(run_dir, "checkpoints.json"),
                     {"last": {"epoch": 4, "val_accuracy": 0.5}})
    with files.Lock(os.path.join(run_dir, ".lock-chief0"), "the run"):  # as train.py holds it
        source = export.load_source(model=run_dir)
        said = []
        manifest = export.export_model(source, str(tmp_path / "art"), formats=["tflite"],
                                       verify_samples=8, log=said.append)
    assert source.checkpoint == {"file": "last.keras", "epoch": 4, "epochs": 6, "run": "training"}
    assert manifest["checkpoint"] == source.checkpoint
    assert ("the run is still training: last.keras holds epoch 4 of 6, not the final weights"
            in source.notes[0])
    assert export.load_source(model=run_dir).checkpoint["run"] == "interrupted"
    shutil.copy(os.path.join(digits_run[0], "results.json"), run_dir)
    finished = export.load_source(model=run_dir)
    assert finished.checkpoint["run"] == "finished" and not finished.notes


@pytest.mark.parametrize("argv, message", [
    (["--mean", "nan", "0", "0", "--std", "1", "1", "1"],
     r"--mean must be finite and --std finite and above 0, got mean \[nan, 0.0, 0.0\]"),
    (["--mean", "1", "--std", "1"], "--mean and --std need 3 values each"),
    (["--std", "1", "0", "1", "--mean", "0", "0", "0"], "--std finite and above 0"),
    (["--input-shape", "64", "64", "1"],
     "--input-shape 64 64 1 does not fit .*, which takes 32x32x3 images: give its own shape"),
    (["--out", ""], "--out is empty"),
])
def test_export_options_are_checked_before_any_work(digits_run, tmp_path, capsys, argv, message):
    code, out, err = call_script("export", ["--model", digits_run[0], "--out",
                                            str(tmp_path / "art"), *argv], capsys)
    assert code == 2 and err.count("\n") == 1 and re.search(message, err), err
    assert os.listdir(tmp_path) == []
