"""Top-1 / top-5 accuracy on ImageNet validation (tensorflow-datasets ``imagenet2012``).

The model comes as :func:`keras_preact.export.load_source` finds it (a training run
directory, a ``.keras`` file, or a registry arch with ``weights``, e.g. ``"imagenet"``),
with the preprocessing it was trained with. Each crop size is a single centre crop:
224 after resizing the shorter side to 256, and the paper's 320 (Table 5) after
resizing it to 320 (``keras_preact.data.imagenet_eval_crop``). Keras' own
``SparseTopKCategoricalAccuracy`` counts. A model with no recorded preprocessing is
taken to be normalised as keras_preact trains ImageNet (its mean and std).
"""

from keras_preact import data as data_lib
from keras_preact._validation import check_int

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


def validation_stream(crop, batch_size, normalisation, data_dir=None, limit=None):
    """``(stream, images)``: batches of ImageNet validation (images, labels),
    centre-cropped to ``crop`` and normalised with ``normalisation`` ((mean, std) on
    the 0-255 scale), and how many images it holds."""
    from keras_preact.preprocessing import normalization

    tf = data_lib._tf()
    ds = data_lib.load_tfds("imagenet2012", "validation", data_dir=data_dir)
    if limit is not None:
        ds = ds.take(limit)
    normalize = normalization(*normalisation)
    stream = (ds.map(lambda x, y: (normalize(data_lib.imagenet_eval_crop(tf, x, crop)), y),
                     num_parallel_calls=tf.data.AUTOTUNE)
              .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    return stream, int(ds.cardinality())


def evaluate_imagenet(source, crops=CROPS, batch_size=64, limit=None, log=print):
    """Top-1 and top-5 accuracy (%) of ``source`` (a ``keras_preact.export.Source``
    whose normalisation is known) at each crop size: ``{crop: {"top1", "top5",
    "images"}}``."""
    import keras

    if source.normalisation is None:
        raise ValueError(
            f"The preprocessing of {source.origin} is unknown: evaluate a training run "
            "directory, a converted model, or --weights imagenet, or pass --mean and --std.")
    if source.classes != 1000:
        raise ValueError(f"{source.origin} has {source.classes} classes; ImageNet has 1000.")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    model = any_size(source.model)
    results = {}
    for crop in crops:
        crop = check_int("crop", crop, minimum=32)
        stream, images = validation_stream(crop, batch_size, source.normalisation,
                                           source.data_dir, limit)
        metrics = {k: keras.metrics.SparseTopKCategoricalAccuracy(k) for k in (1, 5)}
        for x, y in stream:
            scores = model(x, training=False)
            for metric in metrics.values():
                metric.update_state(y, scores)
        results[crop] = {"top1": 100.0 * float(metrics[1].result()),
                         "top5": 100.0 * float(metrics[5].result()), "images": images}
        log(f"{crop}x{crop} centre crop: top-1 {results[crop]['top1']:.2f}%, "
            f"top-5 {results[crop]['top5']:.2f}% on {images} validation images")
    return results
