"""Classify image files and whole folders with a trained model (the library of `catsdogs predict`).

Folders are read recursively; dot-files are ignored. Files that cannot be read (corrupt, empty,
not an image, too large) are listed with the reason and skipped. Your files are never modified:
`sort_into` copies.
"""

import csv
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from catsdogs import runs
from catsdogs.console import display, progress_bar
from catsdogs.data.images import decode_many, irregular_reason, is_hidden
from catsdogs.errors import CatsDogsError
from catsdogs.inference.calibrate import UNKNOWN, rejection_threshold
from catsdogs.inference.tta import predict_arrays, tta_mode

CHUNK = 128  # images decoded per step: small chunks keep decoding (threads) and the model busy
# at once from the first chunk on; 512 left the model idle while the first chunk decoded


def check_paths_exist(paths):
    """Every path names something (a broken link counts: it is skipped with its reason later)."""
    for path in map(Path, paths):
        if not path.exists() and not path.is_symlink():
            raise CatsDogsError("path not found", where=display(path), fix="check the path")


def collect_files(paths):
    """(files to classify, skipped) from files and folders; folders are walked recursively."""
    from catsdogs.data.datasets import find_images

    check_paths_exist(paths)
    files, skipped = [], []
    for path in map(Path, paths):
        if path.is_dir():
            images, folder_skipped = find_images(path)
            files += images
            skipped += folder_skipped
        elif irregular_reason(path):  # named on the command line, but a FIFO or a broken link
            skipped.append((str(path), irregular_reason(path)))
        elif not is_hidden(path):
            files.append(str(path))
    return files, skipped


@dataclasses.dataclass
class Prediction:
    path: str
    predicted: str
    probability: float  # of the predicted class
    top_k: list  # [(class, probability)] best first




def _rows_for(classifier, files, probabilities, top_k, threshold, min_confidence):
    names = classifier.class_names
    rows = []
    for path, probs in zip(files, probabilities):
        if classifier.is_binary:
            best = 1 if probs[1] >= threshold else 0
        else:
            best = int(np.argmax(probs))
        order = np.argsort(-probs)[: max(1, top_k)]
        label = UNKNOWN if min_confidence and probs[best] < min_confidence else names[best]
        rows.append(Prediction(path, label, float(probs[best]),
                               [(names[i], float(probs[i])) for i in order]))
    return rows


DEFAULT_THRESHOLD = 0.5  # a two-class model picks the second class from this probability on


def predict_paths(classifier, paths, batch_size=64, top_k=1, threshold=DEFAULT_THRESHOLD,
                  progress=True, tta=None, min_confidence=None, explain_into=None):
    """Classify files and folders.

    Args:
        min_confidence: a probability, or "auto" (the run's threshold that keeps 95 % of its
            validation images): rows below it are labelled "unknown".
        explain_into: a folder to write each image's Grad-CAM overlay into, named
            `<file name>-<class>.jpg` for the class it explains (the predicted one).

    Returns:
        (rows, skipped): a Prediction per readable file, in path order, and (path, reason) pairs.
    """
    if not 0 < threshold < 1:
        raise CatsDogsError(f"bad value for --threshold: expected a number in (0, 1), "
                            f"received {threshold}")
    tta = tta_mode(tta)
    if min_confidence is not None:
        min_confidence = rejection_threshold(classifier, min_confidence, tta)
    files, skipped = collect_files(paths)
    rows = []
    bar = progress_bar(len(files)) if progress and len(files) > CHUNK else None
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]

    def decode(chunk):
        return decode_many(chunk, classifier.image_size, progress=False)

    with ThreadPoolExecutor(max_workers=1) as prefetch:
        pending = prefetch.submit(decode, chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            pixels, kept, bad, _ = pending.result()
            if index + 1 < len(chunks):
                pending = prefetch.submit(decode, chunks[index + 1])
            skipped += bad
            probabilities = predict_arrays(classifier, pixels, batch_size, tta)
            chunk_rows = _rows_for(classifier, [chunk[i] for i in kept], probabilities, top_k,
                                   threshold, min_confidence)
            if explain_into is not None and len(pixels):
                _explain(classifier, pixels, chunk_rows, explain_into)
            rows += chunk_rows
            if bar is not None:
                bar.add(len(chunk))
    return rows, skipped


def _explain(classifier, pixels, rows, folder):
    """Grad-CAM overlays of one chunk, each for the class its row names (the top class of an
    "unknown" row)."""
    from catsdogs.inference.explain import write_overlays

    names = classifier.class_names
    classes = [names.index(r.top_k[0][0] if r.predicted == UNKNOWN else r.predicted) for r in rows]
    heatmaps, _ = classifier.explain(pixels, classes)
    write_overlays(pixels, heatmaps, [f"{Path(r.path).stem}-{names[c]}" for r, c in
                                      zip(rows, classes)], folder)


def sort_into(rows, folder):
    """Copy each classified file into `folder/<class>/` (`-1`, `-2`, ... added to names taken:
    existing files are never replaced).

    Raises:
        CatsDogsError: a class folder would lie outside `folder` (a link placed in it that
            leads out); checked for every class before anything is copied.
    """
    folder = Path(folder)
    targets = {name: runs.inside(folder, name) for name in sorted({r.predicted for r in rows})}
    for row in rows:
        targets[row.predicted].mkdir(parents=True, exist_ok=True)
        runs.copy_new(row.path, targets[row.predicted])


CSV_HEADER = ("path", "class", "probability")  # the first columns of write_output's CSV
JSON_KEYS = {"predictions", "skipped"}  # and its JSON's keys


def is_predict_output(path):
    """Whether `path` holds what write_output writes (its CSV header, or its JSON's keys), so
    --output writes over an earlier output of predict and never over another file."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        kept = runs.earlier_json_output(path)
        return kept is not None and kept.keys() == JSON_KEYS
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return tuple(next(csv.reader(handle), [])[:3]) == CSV_HEADER
    except (OSError, ValueError, csv.Error):  # UnicodeDecodeError is a ValueError
        return False


def write_output(rows, skipped, path, multiclass):
    path = Path(path)
    if path.suffix.lower() == ".json":
        runs.write_json(path, {
            "predictions": [{"path": display(r.path), "class": r.predicted,
                             "probability": r.probability,
                             **({"top_k": [{"class": c, "probability": p} for c, p in r.top_k]}
                                if multiclass else {})} for r in rows],
            "skipped": [{"path": display(p), "reason": reason} for p, reason in skipped]})
    elif path.suffix.lower() == ".csv":
        k = max((len(r.top_k) for r in rows), default=0) if multiclass else 0
        header = [*CSV_HEADER] + [f"{kind}_{i}" for i in range(1, k + 1)
                                                     for kind in ("top", "top_probability")]
        runs.write_csv(path, header, [[display(r.path), r.predicted, f"{r.probability:.6f}"]
                                      + [v for c, p in r.top_k[:k] for v in (c, f"{p:.6f}")]
                                      for r in rows])
    else:
        raise CatsDogsError("unknown output type", where=path, fix="end the name in .csv or .json")
