"""Plots of a run, written as PNG files in its folder."""

import os

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)

from transferlab import files  # noqa: E402


def learning_curves(histories, path, title=""):
    """Loss and accuracy per epoch for every phase ({phase: history}, as Run.histories reads them) in one
    figure: training as solid lines, validation (when the history has it) dashed in the same colour.

    Epochs are placed by the history's "epoch" numbers (from 0; counted from 0 when it has none), so a
    phase that continues another (fine-tuning) comes after it, with a dotted line where it begins.
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for phase, history in histories.items():
        epochs = [e + 1 for e in history.get("epoch", range(len(history["loss"])))]
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            (line,) = ax.plot(epochs, history[metric], marker="o", label=f"{phase}")
            if f"val_{metric}" in history:
                ax.plot(epochs, history[f"val_{metric}"], linestyle="--", marker="x", color=line.get_color(),
                        label=f"{phase} (validation)")
            if epochs and epochs[0] > 1:
                ax.axvline(epochs[0] - 0.5, color="gray", linestyle=":", label=f"{phase} starts")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)


def confusion_matrix(y_true, y_pred, class_names, path, title=""):
    """Counts of (true class, predicted class) as a heat map with the numbers written in; returns the matrix."""
    n = len(class_names)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black", fontsize="small")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    save(fig, path)
    return matrix


def sample_predictions(images, y_true, y_pred, class_names, path, title="", count=16, seed=0):
    """A grid of `count` images picked with the seed, with true and predicted labels; wrong ones in red."""
    count = min(count, len(images))
    pick = np.random.default_rng(seed).permutation(len(images))[:count]
    images = np.asarray(images[pick])  # images.Files are decoded here, these few only
    y_true, y_pred = np.asarray(y_true)[pick], np.asarray(y_pred)[pick]
    columns = 4
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:count]):
        right = y_true[i] == y_pred[i]
        ax.imshow(images[i].squeeze(), cmap="gray" if images[i].shape[-1] == 1 else None)
        ax.set_title(f"true {class_names[y_true[i]]}\npred {class_names[y_pred[i]]}" + ("" if right else " (wrong)"),
                     color="black" if right else "red", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)


def predictions(folder, images, y_true, y_pred, class_names, title="", seed=0):
    """Both pictures of how a classifier does on held-out images: confusion_matrix.png (returned as counts)
    and sample_predictions.png, in `folder`."""
    sample_predictions(images, y_true, y_pred, class_names, os.path.join(folder, "sample_predictions.png"), title,
                       seed=seed)
    return confusion_matrix(y_true, y_pred, class_names, os.path.join(folder, "confusion_matrix.png"), title)


def save(fig, path):
    """Save under a temporary name, then rename: a crash never leaves a half-written image."""
    try:
        with files.replacing(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
