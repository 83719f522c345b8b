"""Top-1 / top-5 accuracy of a model on its data set's test split.

    keras-preact evaluate --model runs/digits                    # any run, on its own data
    keras-preact evaluate --arch resnet50 --weights imagenet     # keras.applications' weights
    keras-preact evaluate --model runs/r200 --crops 224 320      # an ImageNet run
    keras-preact evaluate --model converted.keras --limit 1000   # a converted or saved model

A run directory is evaluated on its own data set's test split (CIFAR, digits: at its own
image size). ImageNet: single centre crops, 224 (shorter side resized to 256) and the
paper's 320 (Table 5). The preprocessing is the model's own: a run directory's, a
converted model's, or that of the --weights; otherwise keras_preact's ImageNet mean and
std, or --mean/--std.
"""


from keras_preact.cli import common as _cli
from keras_preact.vocab import catalog
from keras_preact.models import registry


def parser():
    p = _cli.Parser(__doc__)
    source = p.add_argument_group("what to evaluate (one of)")
    what = source.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", metavar="PATH", help="a training run directory or a .keras file")
    what.add_argument("--arch", metavar="ARCH", help=_cli.choices_help(
        "a registry network, with --weights", registry.list_models("imagenet")))
    source.add_argument("--checkpoint", default="last", choices=("last", "best"),
                        help="which checkpoint of a run directory: the final weights (what the "
                        "paper reports, and what export.py exports) or the best epoch's")
    source.add_argument("--weights", metavar="imagenet|PATH",
                        help="with --arch: 'imagenet' (keras.applications' ResNet V2 weights, "
                        "depths 50/101/152), their downloaded .h5 file, or a .weights.h5/.keras "
                        "file")
    source.add_argument("--layout", help=_cli.choices_help("with --arch", catalog.LAYOUTS))
    evaluation = p.add_argument_group("evaluation")
    evaluation.add_argument("--crops", type=_cli.positive_int, nargs="+",
                            help="ImageNet centre-crop sizes (default: 224 320)")
    evaluation.add_argument("--batch-size", type=_cli.positive_int, default=64)
    evaluation.add_argument("--limit", type=_cli.positive_int,
                            help="evaluate on the first N test images only")
    evaluation.add_argument("--data-dir", help="tensorflow-datasets data_dir")
    evaluation.add_argument("--mean", type=float, nargs=3, help="normalization mean (0-255)")
    evaluation.add_argument("--std", type=float, nargs=3, help="normalization std (0-255)")
    return p


def evaluate(args):
    _cli.import_tensorflow()
    from keras_preact.deploy import evaluation
    from keras_preact.deploy import export

    kwargs = {}
    if args.arch is not None:
        kwargs = {k: v for k, v in (("weights", args.weights), ("layout", args.layout))
                  if v is not None}
    normalization = (args.mean, args.std) if args.mean is not None else None
    source = export.load_source(model=args.model, arch=args.arch, checkpoint=args.checkpoint,
                                dataset="imagenet2012" if args.arch else None,
                                data_dir=args.data_dir, normalization=normalization, **kwargs)
    if source.dataset is None:  # (a bare .keras file: ImageNet, as before)
        source.dataset = "imagenet2012"
        if source.normalization is None:
            source.normalization = export.dataset_normalization("imagenet2012")
    evaluation.evaluate(source, crops=args.crops, batch_size=args.batch_size, limit=args.limit)


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if (args.mean is None) != (args.std is None):
        p.error("--mean and --std go together")
    if args.arch is None and (args.weights or args.layout):
        p.error("--weights and --layout apply to --arch (a saved model has its own)")
    if args.arch is not None and args.weights is None:
        p.error("--arch needs --weights (an untrained network has nothing to evaluate)")
    return _cli.run(evaluate, args)

