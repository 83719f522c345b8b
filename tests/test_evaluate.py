"""scripts/evaluate.py on tensorflow-datasets' mock ImageNet: top-1 and top-5 are
exactly what the labels and a model of known ranking give, at both crops."""

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import call_script

pytestmark = pytest.mark.tf_only


def ranking_model(path, ranked):
    """A 1000-class model whose scores ignore the image: class ``ranked[i]`` is its
    i-th choice."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(1000, name="predictions")
    model = keras.Model(inputs, dense(x))
    bias = np.zeros(1000, "float32")
    bias[ranked] = np.arange(len(ranked), 0, -1)
    dense.set_weights([np.zeros((3, 1000), "float32"), bias])
    model.save(path)


def test_evaluate_reports_top1_and_top5_at_224_and_320(tmp_path, capsys):
    with tfds.testing.mock_data(num_examples=6):
        labels = [int(y) for _, y in tfds.load("imagenet2012", split="validation",
                                               as_supervised=True)]
        # the first label ranked first, the next four after it (labels may repeat)
        ranked = list(dict.fromkeys(labels))[:5]
        ranking_model(tmp_path / "m.keras", ranked)
        code, out, err = call_script("evaluate", [
            "--model", str(tmp_path / "m.keras"), "--mean", "0", "0", "0",
            "--std", "1", "1", "1", "--batch-size", "4"], capsys)
    assert code == 0, err
    top1 = 100 * np.mean([y == ranked[0] for y in labels])
    top5 = 100 * np.mean([y in ranked for y in labels])
    for crop in (224, 320):
        assert (f"{crop}x{crop} centre crop: top-1 {top1:.2f}%, top-5 {top5:.2f}% on 6 "
                "validation images") in out


def test_evaluate_without_the_data_says_how_to_get_it(tmp_path, capsys):
    ranking_model(tmp_path / "m.keras", [0])
    code, out, err = call_script("evaluate", ["--model", str(tmp_path / "m.keras"),
                                              "--data-dir", str(tmp_path / "tfds")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: imagenet2012 is not prepared in ") and "--data-dir" in err
    assert "mean [123.675, 116.28, 103.53]" in out  # keras_preact's ImageNet normalization


def test_evaluate_a_run_directory_on_its_own_test_split(digits_run, capsys):
    """A digits run is evaluated on the digits test split, from its final weights (what
    export.py exports): the training run's own final test error."""
    import json
    import os

    run_dir, _ = digits_run
    with open(os.path.join(run_dir, "results.json")) as f:
        error = json.load(f)["test_error"]
    code, out, err = call_script("evaluate", ["--model", run_dir], capsys)
    assert code == 0, err
    assert f"on the digits test split" in out
    assert f"digits test split at 32x32: top-1 {100 - error:.2f}% (error {error:.2f}%)" in out
    assert "on 359 images" in out
    code, _, err = call_script("evaluate", ["--model", run_dir, "--crops", "224"], capsys)
    assert code == 2 and "--crops applies to ImageNet" in err and err.count("\n") == 1
