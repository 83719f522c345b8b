"""Converters from keras.applications and keras-hub, and weights="imagenet": the
converted network's outputs equal the source's, in inference mode, with random weights,
random BN statistics and random biases, at even and odd input sizes."""

import hashlib
import socket
import threading

import h5py
import keras
import keras_hub
import numpy as np
import pytest

import keras_preact as kp
from keras_preact import catalog, convert, export, preprocessing

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def randomize(model, rng):
    """Random BN statistics and affine parameters, random biases: nothing left at its
    initial value that could hide a weight copied to the wrong place."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)])
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
    return model


def assert_close(expected, got):
    expected, got = np.asarray(expected), np.asarray(got)
    assert expected.shape == got.shape
    assert np.abs(expected - got).max() <= 1e-5 * np.abs(expected).max()


def hub_backbone(depth, **kwargs):
    """keras-hub's pre-activation ResNet, built from its config arguments (as timm's
    resnetv2 presets are converted: keras_hub/src/utils/timm/convert_resnet.py)."""
    form, units = catalog.IMAGENET_STAGES[depth]
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=list(units),
        stackwise_num_strides=[1, 2, 2, 2], block_type=f"{form}_block",
        use_pre_activation=True, **kwargs)


@pytest.mark.parametrize("depth", [50, 101])
def test_from_keras_applications_is_exact(rng, depth):
    source = getattr(keras.applications, f"ResNet{depth}V2")
    top = randomize(source(weights=None, input_shape=(64, 64, 3), classes=7,
                           classifier_activation=None), rng)
    ours = convert.from_keras_applications(top, include_preprocessing=False)
    assert ours.count_params() == top.count_params()
    assert ours.output_shape == (None, 7)
    x = rng.uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    assert_close(top(x, training=False), ours(x, training=False))

    notop = randomize(source(weights=None, include_top=False, pooling="avg"), rng)
    ours = convert.from_keras_applications(notop)  # with keras.applications' preprocessing
    assert ours.layers[1].name == "normalize"
    for size in (64, 65):
        pixels = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
        expected = notop(keras.applications.resnet_v2.preprocess_input(pixels.copy()),
                         training=False)
        assert_close(expected, ours(pixels, training=False))


@pytest.mark.parametrize("depth", [50, 101])
def test_from_keras_hub_is_exact(rng, depth):
    backbone = randomize(hub_backbone(depth), rng)
    ours = convert.from_keras_hub(backbone)  # no preprocessing known: the bare network
    assert ours.count_params() == backbone.count_params()
    assert [layer.name for layer in ours.layers[:2]] == ["image", "stem_pad"]
    for size in (64, 65):
        x = rng.normal(0, 1, (2, size, size, 3)).astype("float32")
        assert_close(backbone(x, training=False), ours(x, training=False))

    converter = keras_hub.layers.ResNetImageConverter(
        scale=[1 / s for s in IMAGENET_STD], offset=[-m / s for m, s in zip(IMAGENET_MEAN,
                                                                             IMAGENET_STD)])
    classifier = keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=5,
        preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(converter))
    randomize(classifier, rng)
    ours = convert.from_keras_hub(classifier)
    _, normalization = preprocessing.split_normalization(ours)
    np.testing.assert_allclose(normalization, (IMAGENET_MEAN, IMAGENET_STD), rtol=1e-6)
    for size in (64, 65):
        pixels = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
        assert_close(classifier(converter(pixels), training=False), ours(pixels, training=False))


def test_converted_model_round_trips_and_the_layouts_count_as_their_sources(tmp_path, rng):
    ours = convert.from_keras_hub(hub_backbone(50), normalization=(IMAGENET_MEAN, IMAGENET_STD))
    path = tmp_path / "timm50.keras"
    ours.save(path)
    loaded = kp.load_keras_file(path)  # safe_mode: the -inf max-pool is a registered layer
    x = rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(ours(x), loaded(x))
    # The preprocessing travels: export reads it back and puts it inside the artifact.
    source = export.load_source(model=str(path), input_shape=(64, 64, 3))
    np.testing.assert_allclose(source.normalization, (IMAGENET_MEAN, IMAGENET_STD), rtol=1e-6)
    assert "normalize" not in [layer.name for layer in source.model.layers]
    serving = export.build_serving(source, softmax=False)
    np.testing.assert_allclose(serving(x)["logits"], ours(x), rtol=1e-5, atol=1e-5)
    # The keras.applications layout has keras.applications' parameters, biases included.
    for depth in (50, 101):
        theirs = getattr(keras.applications, f"ResNet{depth}V2")(weights=None)
        mine = getattr(kp, f"PreActResNet{depth}")(layout="keras_applications")
        assert mine.count_params() == theirs.count_params()


def test_converters_refuse_other_networks():
    with pytest.raises(convert.ConversionError, match="not a keras.applications ResNet V2"):
        convert.from_keras_applications(keras.applications.ResNet50(weights=None))
    post = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[2, 2, 2, 2],
        stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block")
    with pytest.raises(convert.ConversionError, match="not a keras-hub pre-activation ResNet"):
        convert.from_keras_hub(post)
    with pytest.raises(convert.ConversionError, match="pass normalization=\\(mean, std\\)"):
        convert.from_keras_hub(hub_backbone(18), include_preprocessing=True)


# -- weights="imagenet" ---------------------------------------------------------------
@pytest.fixture
def published_notop(tmp_path_factory):
    """A random ResNet50V2 (no top) and its weights in keras.applications' published
    format (Keras 2's legacy HDF5 layout, under the published file name)."""
    from keras.src.legacy.saving import legacy_h5_format

    rng = np.random.default_rng(1)
    source = randomize(keras.applications.ResNet50V2(weights=None, include_top=False), rng)
    fname, _ = catalog.imagenet_weights_file(50, include_top=False)
    path = tmp_path_factory.mktemp("published") / fname
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    return source, path


def test_weights_imagenet_from_a_local_file_and_through_the_cache(
        published_notop, tmp_path, monkeypatch, rng):
    source, path = published_notop
    pixels = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = source(keras.applications.resnet_v2.preprocess_input(pixels.copy()),
                      training=False)
    scaled = (pixels - 127.5) / 127.5  # catalog.KERAS_APPLICATIONS_NORMALIZATION
    # weights= the downloaded file itself
    model = kp.PreActResNet50(weights=str(path), include_top=False, input_shape=(64, 64, 3))
    assert model.name == "preact_resnet50_keras_applications"
    assert_close(expected, model(scaled, training=False))

    # weights="imagenet": get_file finds the file in the cache by its MD5 (the test's
    # file stands in for the published one), converts it once and keeps the result.
    cache = tmp_path / "keras"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / path.name).write_bytes(path.read_bytes())
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    entry = dict(catalog.IMAGENET_WEIGHTS[50], md5=("0" * 32, md5))
    monkeypatch.setitem(catalog.IMAGENET_WEIGHTS, 50, entry)
    monkeypatch.setattr(convert, "CACHE_DIR", str(cache))
    monkeypatch.setattr(catalog, "IMAGENET_WEIGHTS_URL", "http://127.0.0.1:9/")
    model = kp.PreActResNet50(weights="imagenet", include_top=False, input_shape=(64, 64, 3))
    assert_close(expected, model(scaled, training=False))
    converted = list((cache / "models" / "keras_preact").iterdir())
    assert [p.name for p in converted] == [path.name.replace(".h5", f"_{md5[:8]}.weights.h5")]

    def no_conversion(*args):
        raise AssertionError("converted again instead of loading the cache")

    monkeypatch.setattr(convert, "_keras_applications_source", no_conversion)
    again = kp.PreActResNet50(weights="imagenet", include_top=False, input_shape=(64, 64, 3))
    assert_close(expected, again(scaled, training=False))


def test_weights_imagenet_offline_fails_fast_and_says_what_to_download(
        tmp_path, monkeypatch):
    monkeypatch.setattr(convert, "CACHE_DIR", str(tmp_path))
    fname, _ = catalog.imagenet_weights_file(101, include_top=True)
    # A refused connection (no network) ...
    monkeypatch.setattr(catalog, "IMAGENET_WEIGHTS_URL", "http://127.0.0.1:9/")
    with pytest.raises(convert.ConversionError) as refused:
        kp.PreActResNet101(weights="imagenet")
    message = str(refused.value)
    assert message.startswith(f"Could not fetch http://127.0.0.1:9/{fname} (")
    assert f"weights='/path/to/{fname}'" in message and "\n" not in message
    # ... and a server that accepts and never answers: the download timeout ends it.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True)
    thread.start()
    monkeypatch.setattr(catalog, "IMAGENET_WEIGHTS_URL",
                        f"http://127.0.0.1:{server.getsockname()[1]}/")
    monkeypatch.setattr(convert, "DOWNLOAD_TIMEOUT", 0.5)
    with pytest.raises(convert.ConversionError, match="timed out"):
        kp.PreActResNet101(weights="imagenet")
    thread.join()
    assert accepted, "the download never reached the stalled server"
    accepted[0][0].close()
    server.close()
    assert not any(tmp_path.rglob("*.h5")), "a failed download left a file behind"


def test_published_weights_are_keras_applications_own_files():
    from keras.src.applications import resnet

    assert catalog.IMAGENET_WEIGHTS_URL == resnet.BASE_WEIGHTS_PATH
    for depth, entry in catalog.IMAGENET_WEIGHTS.items():
        assert entry["md5"] == resnet.WEIGHTS_HASHES[entry["name"]]
        assert catalog.imagenet_weights_file(depth, include_top=False) == (
            f"{entry['name']}_weights_tf_dim_ordering_tf_kernels_notop.h5", entry["md5"][1])
