"""Every figure, with matplotlib; each saved atomically as PNG.

Figures are made with `matplotlib.figure.Figure`, not pyplot: no global backend or figure
state is touched, so this works headless and leaves a notebook's inline plotting alone.
"""

import io
import math

import numpy as np
from matplotlib.figure import Figure

from catsdogs import runs


def save(figure, path):
    with runs.atomic_path(path) as temp:
        figure.savefig(temp, dpi=100, bbox_inches="tight", format="png")


def training_curves(history_rows, path, title="Training"):
    """Loss and accuracy per epoch, training vs validation, side by side."""
    epochs = [int(r["epoch"]) for r in history_rows]
    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = [float(r[prefix + metric]) if r.get(prefix + metric) not in (None, "")
                      else math.nan for r in history_rows]
            axis.plot(epochs, values, marker="o", markersize=3, label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.set_title(f"{metric} per epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    save(figure, path)


def image_grid(images, titles, path, title, columns=8):
    """A grid of images (pixels 0..255) with a caption above each."""
    images = np.clip(np.asarray(images), 0, 255).astype(np.uint8)
    rows = max(1, math.ceil(len(images) / columns))
    columns = min(columns, len(images))
    figure = Figure(figsize=(1.8 * columns, 1.9 * rows + 0.4))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, titles):
        axis.imshow(image)
        axis.set_title(caption, fontsize=8)
    figure.suptitle(title)
    save(figure, path)


def confusion_matrix(matrix, class_names, path, title="Confusion matrix"):
    """Counts with true classes down the side and predicted classes along the bottom."""
    save(confusion_matrix_figure(matrix, class_names, title), path)


def png_bytes(figure, dpi=80):
    """A figure as PNG bytes (for TensorBoard images and web pages, where no file is wanted)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, bbox_inches="tight", format="png")
    return buffer.getvalue()


def confusion_matrix_figure(matrix, class_names, title="Confusion matrix"):
    """The figure of `confusion_matrix`, not yet saved."""
    matrix = np.asarray(matrix)
    size = max(4, 0.6 * len(class_names) + 2)
    figure = Figure(figsize=(size + 1, size))
    axis = figure.subplots()
    shown = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(shown, ax=axis, fraction=0.046)
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        axis.text(col, row, str(count), ha="center", va="center",
                  color="white" if count > threshold else "black")
    return figure


def reliability_diagram(curves, labels, path, title="Reliability"):
    """Accuracy against confidence per bin, one curve each (e.g. before and after temperature
    scaling); the diagonal is a perfectly calibrated model."""
    figure = Figure(figsize=(5.5, 5))
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    for bins, label in zip(curves, labels):
        points = [(confidence, accuracy) for confidence, accuracy, count in bins if count]
        axis.plot(*zip(*points), marker="o", markersize=4, label=label)
    axis.set_xlabel("confidence (max probability)")
    axis.set_ylabel("accuracy")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title(title, fontsize=9)
    save(figure, path)
