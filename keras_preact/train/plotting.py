"""Training curves in the style of the paper's Fig. 1 and Fig. 6: training loss
(dashed) and test error (solid) against iterations, one colour per run."""

import os

from keras_preact.io import files
from keras_preact.vocab.extras import require
from keras_preact.train import rundir
from keras_preact.vocab.catalog import format_shortcut

# The paper's figures show test error from 0 to 20%; the axis widens for runs above it.
ERROR_AXIS_TOP = 20.0


def read_run(run_dir):
    """(config.json, iterations, train loss, test error %) of a run directory."""
    config = files.read_json(os.path.join(run_dir, "config.json"))
    steps = config["steps_per_epoch"]
    its, loss, err = [], [], []
    path = os.path.join(run_dir, rundir.LOG)
    rows, problem = rundir.read_log(path)
    if problem is not None:
        raise ValueError(f"{path} is damaged ({problem}): restore it from a copy, or plot "
                         "the other runs.")
    for row in rows:
        its.append(min((row["epoch"] + 1) * steps, config.get("total_iterations", float("inf"))))
        loss.append(row.get("loss", float("nan")))
        err.append(100.0 * (1.0 - row["val_accuracy"]) if "val_accuracy" in row else float("nan"))
    return config, its, loss, err


def run_labels(run_dirs, configs):
    """A label per run: arch and placement (and shortcut), then what tells apart the
    runs that would otherwise share a label: the settings that differ, else the folder."""
    labels = []
    for c in configs:
        r = c["resolved"]
        label = f"{r['arch']} {r['placement']}"
        shortcut = format_shortcut(r["shortcut"])
        labels.append(label + (f" {shortcut}" if shortcut != "identity" else ""))
    for label in set(labels):
        same = [i for i, lab in enumerate(labels) if lab == label]
        if len(same) < 2:
            continue
        ids = [configs[i]["identity"] for i in same]
        keys = sorted(k for k in set().union(*ids) if len({repr(d.get(k)) for d in ids}) > 1)
        for i, d in zip(same, ids):
            suffix = (", ".join(f"{k}={d.get(k)}" for k in keys) if keys
                      else os.path.basename(os.path.normpath(run_dirs[i])))
            labels[i] = f"{label} ({suffix})"
    return labels


def make_figure(run_dirs, log_error=False):
    """The matplotlib figure of the runs (training loss, test error; ``log_error``: the
    error on a log axis from 0.5% to 100%, readable down to 1%)."""
    require("matplotlib", what="Plotting")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [read_run(d) for d in run_dirs]
    labels = run_labels(run_dirs, [r[0] for r in runs])
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    top = ERROR_AXIS_TOP
    for (_, its, loss, err), label, colour in zip(runs, labels, colours(len(runs))):
        ax_loss.plot(its, loss, "--", color=colour, label=label)
        ax_err.plot(its, err, "-", color=colour, label=label)
        finite = [e for e in err if e == e]
        if finite and finite[-1] > 0.8 * top:
            top = min(100.0, 1.25 * finite[-1])
    ax_loss.set(xlabel="iterations", ylabel="training loss", title="Training loss")
    if log_error:  # (one diverging run must not flatten the others)
        ax_loss.set_yscale("log")
    ax_err.set(xlabel="iterations", ylabel="test error (%)", title="Test error",
               ylim=(0.5, 100.0) if log_error else (0.0, top))
    if log_error:
        ax_err.set_yscale("log")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
    legend_below(fig, ax_err)
    return fig


def colours(count):
    """``count`` distinct colours (matplotlib's default cycle repeats after 10)."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if count <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(count)]


def legend_below(fig, ax, columns=3):
    """One legend for the figure, of ``ax``'s lines, below the panels (a legend inside a
    panel hides the curves of a large grid); the figure grows to hold it."""
    handles, names = ax.get_legend_handles_labels()
    rows = -(-len(names) // columns)
    width, height = fig.get_size_inches()
    extra = 0.2 * rows + 0.1
    fig.set_size_inches(width, height + extra)
    fig.legend(handles, names, loc="lower center", ncol=min(columns, len(names)), fontsize=8)
    fig.tight_layout(rect=(0, extra / (height + extra), 1, 1))


def plot_runs(run_dirs, out_path, log_error=False):
    """Write a PNG of training loss and test error of the runs; return its path."""
    return save_figure(make_figure(run_dirs, log_error), out_path)


def save_figure(fig, out_path):
    """Write a matplotlib figure as a PNG, atomically, and close it; return the path."""
    import matplotlib.pyplot as plt

    try:
        with files.atomic_path(out_path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return out_path
