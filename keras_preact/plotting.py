"""Training curves in the style of the paper's Fig. 1 and Fig. 6: training loss
(dashed) and test error (solid) against iterations, one colour per run."""

import csv
import json
import os


def read_run(run_dir):
    """(label, iterations, train loss, test error %) of a run directory."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    steps = config["steps_per_epoch"]
    its, loss, err = [], [], []
    with open(os.path.join(run_dir, "log.csv")) as f:
        for row in csv.DictReader(f):
            its.append((int(row["epoch"]) + 1) * steps)
            loss.append(float(row["loss"]))
            err.append(100.0 * (1.0 - float(row["val_accuracy"])) if row.get("val_accuracy") else float("nan"))
    resolved = config["resolved"]
    label = f"{resolved['arch']} {resolved['placement']}"
    if resolved["shortcut"] != "identity":
        label += f" {resolved['shortcut']}"
    return label, its, loss, err


def plot_runs(run_dirs, out_path):
    """Write a PNG of training loss and test error of the runs; return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    for i, run_dir in enumerate(run_dirs):
        label, its, loss, err = read_run(run_dir)
        colour = f"C{i}"
        ax_loss.plot(its, loss, "--", color=colour, label=label)
        ax_err.plot(its, err, "-", color=colour, label=label)
    ax_loss.set(xlabel="iterations", ylabel="training loss", title="Training loss")
    ax_err.set(xlabel="iterations", ylabel="test error (%)", title="Test error")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(out_path)}")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, out_path)
    return out_path
