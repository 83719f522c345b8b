"""The paper's experiments as named grids of training runs (``scripts/experiment.py``).

A grid is a list of variants (arch, data set, placement, shortcut), each trained once per
seed into its own run directory under ``out``, with ``keras_preact.train.training.train``: a
finished run is skipped, an interrupted one resumes, a diverged one is recorded (the
paper's "fail") and not retried. Then ``results.md`` (measured test error, mean and
standard deviation over seeds, beside the paper's figure for the paper's configuration)
and ``curves.png`` (the paper's Fig. 1 / Fig. 6 style, one colour per variant).
"""

import dataclasses
import os
import shlex
import statistics

from keras_preact.io import files
from keras_preact.models import registry
from keras_preact.vocab._validation import check_choice, installed
from keras_preact.vocab.catalog import PLACEMENT_FIGURES, format_shortcut

TABLE1_SHORTCUTS = (  # the rows of Table 1 (exclusive gating's "0 to -5" row runs bias 0)
    "identity", "constant_scaling:scale=0", "constant_scaling:scale=0.5",
    "constant_scaling:scale=0.5,scale_residual=true", "exclusive_gating:gate_bias=0",
    "exclusive_gating:gate_bias=-6", "exclusive_gating:gate_bias=-7",
    "shortcut_only_gating:gate_bias=0", "shortcut_only_gating:gate_bias=-6", "conv1x1",
    "dropout:rate=0.5")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One configuration of a grid, as the paper ran it."""

    arch: str
    dataset: str
    placement: str = "full_preact"
    shortcut: str = "identity"

    @property
    def key(self):
        """The unit and shortcut: ``original``, ``original conv1x1`` (``--variants``)."""
        shortcut = format_shortcut(self.shortcut)
        return self.placement + ("" if shortcut == "identity" else f" {shortcut}")

    @property
    def label(self):
        return f"{self.arch} {self.key} {self.dataset}"

    @property
    def folder(self):
        return "".join(c if c.isalnum() or c in "-." else "_" for c in self.label.replace(" ", "-"))

    def paper_error(self):
        from keras_preact.train import config as cfg

        return cfg.paper_error(cfg.resolve_config(self.config("x")))

    def config(self, model_dir, **options):
        from keras_preact.train.config import TrainConfig

        return TrainConfig(model_dir=model_dir, arch=self.arch, dataset=self.dataset,
                           placement=self.placement, shortcut=self.shortcut, **options)


def _table1():
    return [Variant("resnet110", "cifar10", "original", s) for s in TABLE1_SHORTCUTS]


def _table2():
    return [Variant(arch, "cifar10", p) for arch in ("resnet110", "resnet164")
            for p in PLACEMENT_FIGURES]


def _table3():
    return [Variant(arch, dataset, p) for arch in ("resnet164", "resnet1001")
            for dataset in ("cifar10", "cifar100") for p in ("original", "full_preact")]


def _fig1():
    return [Variant("resnet1001", "cifar10", p) for p in ("original", "full_preact")]


def _fig6():
    return [Variant("resnet110", "cifar10", p) for p in ("original", "bn_after_addition")] + [
        Variant("resnet164", "cifar10", p) for p in ("original", "full_preact")]


GRIDS = {
    "table1": ("Table 1: shortcut variants of Fig. 2 (ResNet-110, original unit)", _table1),
    "table2": ("Table 2: activation placements of Fig. 4 (ResNet-110 and ResNet-164)", _table2),
    "table3": ("Table 3: original vs. pre-activation, ResNet-164 and ResNet-1001, CIFAR-10/100",
               _table3),
    "fig1": ("Fig. 1: ResNet-1001 on CIFAR-10, original vs. pre-activation", _fig1),
    "fig6": (("Fig. 6: BN after addition vs. original (ResNet-110), pre-activation vs. "
              "original (ResNet-164)"), _fig6),
}


@dataclasses.dataclass
class Run:
    variant: Variant  # as the paper ran it (its figure comes from this)
    config: object  # the TrainConfig this grid trains, as given (train_command shows it)
    seed: int
    resolved: object = None  # config, resolved (by plan, once)

    @property
    def label(self):
        """The variant this run trains (its arch and data set, which may be the grid's)."""
        c = self.config
        return Variant(c.arch, c.dataset, c.placement, c.shortcut).label


def plan(name, out, arch=None, dataset=None, iterations=None, epochs=None, seeds=1,
         batch_size=None, variants=None, **options):
    """The runs of grid ``name``: each variant (with ``arch`` and ``dataset`` replaced where
    given, to run the grid at another depth or on other data) once per seed."""
    check_choice("experiment", name, GRIDS)
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}.")
    grid = GRIDS[name][1]()
    if variants:
        keys = list(dict.fromkeys(v.key for v in grid))
        for wanted in variants:
            check_choice(f"variant of {name}", wanted, keys)
        grid = [v for v in grid if v.key in variants]
    runs, seen = [], set()
    for variant in grid:
        ours = dataclasses.replace(variant, arch=arch or variant.arch,
                                   dataset=dataset or variant.dataset)
        if ours in seen:  # (--arch folds Table 2's two depths into one)
            continue
        seen.add(ours)
        for seed in range(seeds):
            config = ours.config(os.path.join(out, ours.folder, f"seed{seed}"), seed=seed,
                                 iterations=iterations, epochs=epochs, batch_size=batch_size,
                                 plot=False, **options)
            runs.append(Run(variant, config, seed))
    from keras_preact.train.config import resolve_config

    for run in runs:  # every run checked before anything is trained
        run.resolved = resolve_config(run.config)
    return runs


def train_command(config):
    """The ``keras-preact train`` command line that trains ``config``."""
    from keras_preact.train.config import TrainConfig, flag

    default = TrainConfig(model_dir="")
    args = []
    for field in dataclasses.fields(config):
        value, usual = getattr(config, field.name), getattr(default, field.name)
        if value == usual or value is None:
            continue
        if field.type is bool:
            args.append(flag(field.name))
        else:
            shown = format_shortcut(value) if field.name == "shortcut" else value
            # (a bool given to a choice, jit_compile=True, is its choice "true")
            shown = str(shown).lower() if isinstance(shown, bool) else str(shown)
            args += [flag(field.name), shown]
    return shlex.join(["keras-preact", "train", *args])


GRID_RECORD = "grid.json"
GRID_OWNED = ".owned-grid.json"  # what the grid wrote in --out (files.Record)


def run_grid(name, out, log=print, **kwargs):
    """Train (or resume, or skip) every run of grid ``name``; write ``results.md`` and
    ``curves.png`` in ``out``; return the rows of the results table."""
    from keras_preact.train import rundir, training

    runs = plan(name, out, **kwargs)
    files.ensure_directory_possible(out, "--out")
    checked = [_check_folder(run) for run in runs]  # every run's folder, before any training
    files.ensure_directory(out, "--out")
    record_path = os.path.join(out, GRID_RECORD)
    owned = files.Record.read(out, GRID_OWNED) or files.Record(out, GRID_OWNED)
    if not owned.entries and os.path.exists(record_path):  # a grid of an older keras_preact
        owned.add(record_path, *(os.path.join(out, n) for n in ("results.md", "curves.png")))
    owned.claim(record_path, *(os.path.join(out, n) for n in ("results.md", "curves.png")),
                what="--out")
    record = files.read_json(record_path) if os.path.exists(record_path) else {}
    for i, (run, ready) in enumerate(zip(runs, checked), start=1):
        where = run.config.model_dir
        log(f"[{i}/{len(runs)}] {run.label}, seed {run.seed} (the paper's "
            f"{run.variant.label}): {where}")
        if record.get(where, {}).get("status") == "diverged":
            log(f"           diverged before; not retried (remove it from {GRID_RECORD} to retry)")
            continue
        if ready.action == rundir.Action.FINISHED:
            log(f"           holds a finished run (test error "
                f"{ready.found.results.get('test_error')}%); nothing to do")
            continue
        try:
            training.train(ready, log=lambda line: log("           " + line))
        except training.TrainingDiverged as e:
            # (training's advice names train.py's options; the grid's are others)
            log(f"           {str(e).split('. ')[0]}: recorded as diverged (the paper's "
                f"\"fail\") and not retried; to retry, remove it from {GRID_RECORD}, or run the "
                "grid with a lower --lr into another --out.")
            record[where] = {"status": "diverged"}
            files.write_json(record_path, record)
        import keras

        keras.backend.clear_session()
    rows = summarise(name, runs, record)
    write_results(name, runs, rows, os.path.join(out, "results.md"))
    finished = [r.config.model_dir for r in runs
                if r.seed == 0 and os.path.exists(os.path.join(r.config.model_dir, "log.csv"))]
    plotted = finished and installed("matplotlib")
    if plotted:
        from keras_preact.train.plotting import plot_runs

        plot_runs(finished, os.path.join(out, "curves.png"), log_error=True)
    log(f"results    {os.path.join(out, 'results.md')}" +
        (f", {os.path.join(out, 'curves.png')}" if plotted else "") +
        ("; not written: curves.png (matplotlib is not installed)"
         if finished and not plotted else ""))
    return rows


def _check_folder(run):
    """``run``'s folder checked (``rundir.Checked``, what ``training.train`` takes); a
    folder ``rundir.check`` refuses is refused in experiment.py's terms (its messages name
    train.py's --model-dir and --overwrite; a grid's folders come from --out, and a run is
    discarded by moving it away)."""
    from keras_preact.train import rundir

    config = run.resolved
    files.ensure_directory_possible(config.model_dir, f"the folder of {run.label} seed {run.seed}")
    try:
        return rundir.Checked(config, *rundir.check(config))
    except files.Busy:
        raise
    except files.RefusedError as e:
        refused, found = e, rundir.inspect(config.model_dir)
    changed = rundir.differences(found.identity or {}, config.identity())
    entries = [n for n in sorted(os.listdir(found.path)) if not n.startswith(".")]
    if found.ours and changed:
        why = f"holds a run with other settings (differs in: {', '.join(changed)})"
    elif not found.ours and entries:
        why = (f"holds {files.describe_entries(found.path, entries)}, which keras_preact "
               "cannot resume as this run")
    else:  # (a damaged run: its own advice)
        raise refused
    raise files.RefusedError(
        f"{found.path!r}, the folder of {run.label} seed {run.seed}, {why}: run the grid "
        "with another --out, or move that folder away to train the run again.") from None


def summarise(name, runs, record=None):
    """One row per variant: its label, the paper's figure, and what its runs measured."""
    record = record or {}
    rows = {}
    for run in runs:
        ours = run.config
        row = rows.setdefault(run.label, {"variant": run.label, "paper": run.variant.paper_error(),
                                      "paper_variant": run.variant.label, "errors": [],
                                      "diverged": 0, "pending": 0})
        results = os.path.join(ours.model_dir, "results.json")
        if os.path.exists(results):
            row["errors"].append(files.read_json(results)["test_error"])
        elif record.get(ours.model_dir, {}).get("status") == "diverged":
            row["diverged"] += 1
        else:
            row["pending"] += 1
    return list(rows.values())


def _measured(row):
    errors = row["errors"]
    if not errors:
        text = "-"
    elif len(errors) == 1:
        text = f"{errors[0]:.2f}"
    else:
        text = f"{statistics.mean(errors):.2f} ± {statistics.stdev(errors):.2f}"
    failed = row["diverged"] or (errors and statistics.mean(errors) > registry.FAIL_ABOVE)
    notes = [f"{row['diverged']} diverged"] if row["diverged"] else []
    notes += [f"{row['pending']} not finished"] if row["pending"] else []
    return ("fail " if failed else "") + text + (f" ({', '.join(notes)})" if notes else "")


def _paper(value):
    if value is None:
        return "-"
    return f"fail (>{registry.FAIL_ABOVE:g})" if value == registry.FAIL else f"{value:.2f}"


def write_results(name, runs, rows, path):
    """``results.md``: the budget, then the measured table beside the paper's."""
    from keras_preact.train.config import RECIPES, WARMUP_LR, TrainConfig

    c = runs[0].config
    epochs = c.epochs or RECIPES[c.recipe].cifar_epochs
    budget = (f"{c.iterations} iterations" if c.iterations else
              f"{epochs} epochs" if epochs else "the paper's schedule")
    if c.steps_per_epoch:
        budget += f" of {c.steps_per_epoch} steps"
    if c.warmup_iterations:
        budget += f", warm-up {c.warmup_iterations} iterations at {WARMUP_LR:g}"
    if c.lr != TrainConfig.lr:
        budget += f", learning rate {c.lr:g}"
    if c.recipe != TrainConfig.recipe:
        budget += f", recipe {c.recipe} ({RECIPES[c.recipe].source})"
    lines = [
        f"# {name}: {GRIDS[name][0]}", "",
        (f"Budget: {budget}, batch {c.batch_size or 'default'}, "
         f"{max(r.seed for r in runs) + 1} seed(s) per variant; test error in %, mean ± "
         f"standard deviation over seeds. \"fail\": above {registry.FAIL_ABOVE:g}% (the "
         "paper's definition) or diverged. The paper's figure is that of the paper's "
         "configuration of the row (its arch and data set)."), "",
        "| variant | paper's configuration | paper | measured | runs |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        count = len(row["errors"]) + row["diverged"]
        lines.append(f"| {row['variant']} | {row['paper_variant']} | {_paper(row['paper'])} | "
                     f"{_measured(row)} | {count} |")
    with files.atomic_file(path) as f:
        f.write("\n".join(lines) + "\n")
    return path
