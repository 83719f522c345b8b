"""Build a model from the registry and print its summary and metadata.

    keras-preact summary resnet164
    keras-preact summary resnet110 --placement original --shortcut exclusive_gating:gate_bias=-6
    keras-preact summary --list
"""

import json
import math

from keras_preact.cli import common as _cli
from keras_preact.vocab import catalog
from keras_preact.models import registry


def parser():
    p = _cli.Parser(__doc__)
    p.add_argument("arch", nargs="?", help=_cli.choices_help("the network", registry.list_models()))
    p.add_argument("--list", action="store_true", help="print the model table and exit")
    p.add_argument("--classes", type=_cli.positive_int, help="classes (default: the arch's)")
    p.add_argument("--placement", default="full_preact", metavar="NAME",
                   help=_cli.choices_help("residual unit", catalog.PLACEMENT_FIGURES))
    p.add_argument("--shortcut", default="identity", metavar="NAME[:key=value,...]",
                   help=_cli.choices_help("shortcut", catalog.SHORTCUT_OPTIONS))
    p.add_argument("--projection", choices=catalog.PROJECTIONS,
                   help="how a change of shape is met (default: B; the arch's where it binds one)")
    p.add_argument("--no-summary", action="store_true", help="print only the metadata")
    return p


def summary(args):
    _cli.import_tensorflow()
    chosen = {} if args.projection is None else {"projection": args.projection}
    model = registry.get_model(args.arch, classes=args.classes, placement=args.placement,
                               shortcut=args.shortcut, **chosen)
    if not args.no_summary:
        model.summary()
    info = registry.model_info(args.arch)
    info["params"] = f"{info['params']:,} (default configuration)"
    info["this_model"] = (f"{model.name}: "
                          f"{sum(math.prod(w.shape) for w in model.trainable_weights):,} "
                          "trainable parameters")
    for key, value in info.items():
        if key in ("options", "source") and not value:  # (only the variants bind options)
            continue
        print(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.list:
        print(registry.markdown_table())
        return 0
    if args.arch is None:
        p.error("give an arch name, or --list")
    return _cli.run(summary, args)

