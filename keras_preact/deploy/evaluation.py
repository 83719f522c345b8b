"""Top-1 / top-5 accuracy of a model on its data set's test split: ImageNet validation
(tensorflow-datasets ``imagenet2012``) at one or more crops, or the test split of a small
data set (CIFAR, digits) at its own size (:func:`evaluate`).

The model comes as :func:`keras_preact.deploy.export.load_source` finds it (a training run
directory, a ``.keras`` file, or a registry arch with ``weights``, e.g. ``"imagenet"``),
with the preprocessing it was trained with. Each crop size is a single centre crop:
224 after resizing the shorter side to 256, and the paper's 320 (Table 5) after
resizing it to 320 (``keras_preact.data.imagenet_eval_crop``). Keras' own
``SparseTopKCategoricalAccuracy`` counts. A model with no recorded preprocessing is
taken to be normalized as keras_preact trains ImageNet (its mean and std).
"""

from keras_preact.data import datasets as data_lib
from keras_preact.vocab._validation import check_int

CROPS = (224, 320)


def any_size(model):
    """``model`` with an input of any height and width (same layers' weights): the
    networks are fully convolutional up to their global pooling."""
    import keras

    if tuple(model.input_shape[1:3]) == (None, None):
        return model
    channels = model.input_shape[-1]
    copy = keras.models.clone_model(model, input_tensors=keras.Input((None, None, channels)))
    copy.set_weights(model.get_weights())
    return copy


def validation_stream(crop, batch_size, normalization, data_dir=None, limit=None):
    """``(stream, images)``: batches of ImageNet validation (images, labels),
    centre-cropped to ``crop`` and normalized with ``normalization`` ((mean, std) on
    the 0-255 scale), and how many images it holds."""
    from keras_preact.layers.preprocessing import normalization_layer

    tf = data_lib.tensorflow()
    ds = data_lib.load_tfds("imagenet2012", "validation", data_dir=data_dir)
    if limit is not None:
        ds = ds.take(limit)
    normalize = normalization_layer(*normalization)
    stream = (ds.map(lambda x, y: (normalize(data_lib.imagenet_eval_crop(tf, x, crop)), y),
                     num_parallel_calls=tf.data.AUTOTUNE)
              .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    return stream, int(ds.cardinality())


def _top1_top5(model, batches, images):
    """``{"top1", "top5", "images"}`` (%) of ``model`` over ``(x, y)`` batches (Keras'
    ``SparseTopKCategoricalAccuracy`` counts)."""
    import keras

    metrics = {k: keras.metrics.SparseTopKCategoricalAccuracy(k) for k in (1, 5)}
    for x, y in batches:
        scores = model(x, training=False)
        for metric in metrics.values():
            metric.update_state(y, scores)
    return {"top1": 100.0 * float(metrics[1].result()),
            "top5": 100.0 * float(metrics[5].result()), "images": images}


def evaluate(source, crops=None, batch_size=64, limit=None, log=print):
    """Evaluate ``source`` on its own data set's test split (``source.dataset``; ImageNet
    at ``crops``, default :data:`CROPS`): ``{size: {"top1", "top5", "images"}}``."""
    if source.normalization is None:
        raise ValueError(
            f"The preprocessing of {source.origin} is unknown: evaluate a training run "
            "directory, a converted model, or --weights imagenet, or pass --mean and --std.")
    mean, std = source.normalization
    split = ("ImageNet validation" if source.dataset in (None, "imagenet2012")
             else f"the {source.dataset} test split")
    log(f"evaluating {source.origin} on {split}; preprocessing (pixels - mean) / std, mean "
        f"{[round(m, 3) for m in mean]}, std {[round(s, 3) for s in std]}")
    if source.dataset in (None, "imagenet2012"):
        return evaluate_imagenet(source, crops or CROPS, batch_size, limit, log)
    if crops:
        raise ValueError(f"--crops applies to ImageNet; {source.origin} is a {source.dataset} "
                         "model, evaluated at its own image size.")
    return evaluate_small(source, batch_size, limit, log)


def evaluate_small(source, batch_size=64, limit=None, log=print):
    """Top-1 and top-5 accuracy (%) of ``source`` on the test split of its small data set,
    normalized as it was trained."""
    from keras_preact.layers.preprocessing import normalization_layer

    batch_size = check_int("batch_size", batch_size, minimum=1)
    x, y = data_lib.load_arrays(source.dataset, "test", source.data_dir, source.cifar_archive)
    if limit is not None:
        x, y = x[:check_int("limit", limit, minimum=1)], y[:limit]
    if source.classes != data_lib.DATASETS[source.dataset].classes:
        raise ValueError(f"{source.origin} has {source.classes} classes; {source.dataset} has "
                         f"{data_lib.DATASETS[source.dataset].classes}.")
    normalize = normalization_layer(*source.normalization)
    result = _top1_top5(source.model, ((normalize(x[i:i + batch_size]), y[i:i + batch_size])
                                       for i in range(0, len(x), batch_size)), len(x))
    size = x.shape[1]
    log(f"{source.dataset} test split at {size}x{size}: top-1 {result['top1']:.2f}% (error "
        f"{100 - result['top1']:.2f}%), top-5 {result['top5']:.2f}% on {len(x)} images")
    return {size: result}


def evaluate_imagenet(source, crops=CROPS, batch_size=64, limit=None, log=print):
    """Top-1 and top-5 accuracy (%) of ``source`` (a ``keras_preact.deploy.export.Source``
    whose normalization is known: see :func:`evaluate`) at each crop size: ``{crop: {"top1", "top5",
    "images"}}``."""
    if source.classes != 1000:
        raise ValueError(f"{source.origin} has {source.classes} classes; ImageNet has 1000.")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    model = any_size(source.model)
    results = {}
    for crop in crops:
        crop = check_int("crop", crop, minimum=32)
        stream, images = validation_stream(crop, batch_size, source.normalization,
                                           source.data_dir, limit)
        results[crop] = _top1_top5(model, stream, images)
        log(f"{crop}x{crop} centre crop: top-1 {results[crop]['top1']:.2f}%, "
            f"top-5 {results[crop]['top5']:.2f}% on {images} validation images")
    return results
