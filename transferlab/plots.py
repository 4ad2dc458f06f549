"""Plots of a run, written as PNG files in its folder."""

import os

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)


def learning_curves(histories, path, title=""):
    """Loss and accuracy per epoch for every phase ({phase: keras History.history}) in one figure."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for phase, history in histories.items():
        epochs = range(1, len(history["loss"]) + 1)
        ax_loss.plot(epochs, history["loss"], marker="o", label=phase)
        ax_acc.plot(epochs, history["accuracy"], marker="o", label=phase)
    for ax, name in ((ax_loss, "training loss"), (ax_acc, "training accuracy")):
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
