"""Plots of a run, written as PNG files in its folder."""

import os

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)


def learning_curves(histories, path, title=""):
    """Loss and accuracy per epoch for every phase ({phase: keras History.history}) in one figure:
    training as solid lines, validation (when the history has it) dashed in the same colour."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for phase, history in histories.items():
        epochs = range(1, len(history["loss"]) + 1)
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            (line,) = ax.plot(epochs, history[metric], marker="o", label=f"{phase}")
            if f"val_{metric}" in history:
                ax.plot(epochs, history[f"val_{metric}"], linestyle="--", color=line.get_color(),
                        label=f"{phase} (validation)")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)


def save(fig, path):
    """Save under a temporary name, then rename: a crash never leaves a half-written image."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
