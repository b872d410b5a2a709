"""Classify image files and whole folders with a trained model.

    python -m catsdogs.predict runs/seed-catsdogs-20261124-142544 my_photos/
    python -m catsdogs.predict model.keras a.jpg b.png --output predictions.csv
    python -m catsdogs.predict RUN_DIR photos/ --top-k 3 --output predictions.json
    python -m catsdogs.predict RUN_DIR photos/ --sort-into sorted/     # copies, never moves
    python -m catsdogs.predict RUN_DIR photos/ --tta shift   # test-time augmentation: 6 views

Folders are read recursively; dot-files are ignored. Files that cannot be read (corrupt, empty,
not an image, too large) are listed with the reason and skipped; the command fails (exit 2)
only if no file at all could be classified. Your files are never modified.
"""

import dataclasses
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from catsdogs import runs
from catsdogs.config import command_parser
from catsdogs.errors import CatsDogsError, run_command
from catsdogs.images import decode_many, is_hidden

CHUNK = 128  # images decoded per step: small chunks keep decoding (threads) and the model busy
# at once from the first chunk on; 512 left the model idle while the first chunk decoded


def display(path):
    """A printable form of a path whose name may not be valid UTF-8."""
    return os.fsencode(path).decode("utf-8", "replace")


def collect_files(paths):
    """(files to classify, skipped) from files and folders; folders are walked recursively."""
    from catsdogs.data import find_images

    files, skipped = [], []
    for path in map(Path, paths):
        if not path.exists():
            raise CatsDogsError("path not found", where=display(path), fix="check the path")
        if path.is_dir():
            images, others = find_images(path)
            files += images
            skipped += [(p, "not an image file type (by its extension)") for p in others]
        elif not is_hidden(path):
            files.append(str(path))
    return files, skipped


@dataclasses.dataclass
class Prediction:
    path: str
    predicted: str
    probability: float  # of the predicted class
    top_k: list  # [(class, probability)] best first


def _rows_for(classifier, files, probabilities, top_k, threshold):
    names = classifier.class_names
    rows = []
    for path, probs in zip(files, probabilities):
        if classifier.is_binary:
            best = 1 if probs[1] >= threshold else 0
        else:
            best = int(np.argmax(probs))
        order = np.argsort(-probs)[: max(1, top_k)]
        rows.append(Prediction(path, names[best], float(probs[best]),
                               [(names[i], float(probs[i])) for i in order]))
    return rows


TTA_MODES = ("flip", "shift")


def tta_mode(tta):
    """The TTA_MODES name for a `tta` argument: None (off), a mode, or True (the flip, as before
    there were modes). Checked here, before any image is decoded or predicted."""
    mode = "flip" if tta is True else tta or None
    if mode is not None and mode not in TTA_MODES:
        raise CatsDogsError(f"unknown test-time augmentation {mode!r}", where="--tta",
                            fix=f"use one of {', '.join(TTA_MODES)}")
    return mode


def tta_views(batch, mode):
    """(weight, view) pairs whose weighted probabilities make a test-time-augmented prediction;
    `mode` is one of TTA_MODES (tta_mode checks it once per call, not per batch).

    "flip": the batch and its mirror image, half each. "shift": airbench's views: those two
    (half), and each moved diagonally by a pixel both ways (the other half), edges repeated as
    ImageDataGenerator's "nearest" fill does in training; the pixel grows with the image
    (1 px per 32). On CIFAR-10, +0.2 to +0.7 points over flips alone (bench/RESULTS.md).
    """
    mirrored = batch[:, :, ::-1]
    if mode == "flip":
        return [(0.5, batch), (0.5, mirrored)]
    height, width = batch.shape[1:3]
    step = max(1, round(height / 32))
    views = [(0.25, batch), (0.25, mirrored)]
    for view in (batch, mirrored):
        padded = np.pad(view, ((0, 0), (step, step), (step, step), (0, 0)), mode="edge")
        views += [(0.125, padded[:, :height, :width]), (0.125, padded[:, 2 * step:, 2 * step:])]
    return views


def predict_arrays(classifier, pixels, batch_size=64, tta=None):
    """Probabilities (n, classes) for decoded pixels, in batches.

    `tta`: None for the plain view, or one of TTA_MODES (True means "flip"); each batch's views
    go through the model as one batch."""
    mode = tta_mode(tta)
    out = []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start:start + batch_size].astype(np.float32)
        if mode is None:
            out.append(classifier.probabilities(batch))
            continue
        weights, views = zip(*tta_views(batch, mode))
        probs = classifier.probabilities(np.concatenate(views)).reshape(len(views), len(batch), -1)
        out.append(np.tensordot(np.array(weights, np.float32), probs, axes=1))
    return np.concatenate(out) if out else np.zeros((0, len(classifier.class_names)))


def predict_paths(classifier, paths, batch_size=64, top_k=1, threshold=0.5, progress=True,
                  tta=None):
    """Classify files and folders.

    Returns:
        (rows, skipped): a Prediction per readable file, in path order, and (path, reason) pairs.
    """
    import keras

    if not 0 < threshold < 1:
        raise CatsDogsError(f"bad value for --threshold: expected a number in (0, 1), "
                            f"received {threshold}")
    tta = tta_mode(tta)
    files, skipped = collect_files(paths)
    rows = []
    bar = keras.utils.Progbar(len(files), unit_name="image") if progress and len(files) > CHUNK else None
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
            rows += _rows_for(classifier, [chunk[i] for i in kept], probabilities, top_k, threshold)
            if bar is not None:
                bar.add(len(chunk))
    return rows, skipped


def sort_into(rows, folder):
    """Copy each classified file into `folder/<class>/`; existing files are never replaced."""
    folder = Path(folder)
    for row in rows:
        target_dir = folder / row.predicted
        target_dir.mkdir(parents=True, exist_ok=True)
        source = Path(row.path)
        target = target_dir / source.name
        counter = 1
        while target.exists():
            target = target_dir / f"{source.stem}-{counter}{source.suffix}"
            counter += 1
        shutil.copy2(source, target)


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
        header = ["path", "class", "probability"] + [f"{kind}_{i}" for i in range(1, k + 1)
                                                     for kind in ("top", "top_probability")]
        runs.write_csv(path, header, [[display(r.path), r.predicted, f"{r.probability:.6f}"]
                                      + [v for c, p in r.top_k[:k] for v in (c, f"{p:.6f}")]
                                      for r in rows])
    else:
        raise CatsDogsError("unknown output type", where=path, fix="end the name in .csv or .json")


def add_tta_flag(parser):
    """--tta [flip|shift], shared by predict and evaluate."""
    parser.add_argument("--tta", nargs="?", const="flip", choices=TTA_MODES,
                        help="test-time augmentation: average the image with its mirror image "
                             "(flip, the default), or also with 1-px shifts of both (shift)")


def build_parser():
    parser = command_parser("predict", __doc__)
    parser.add_argument("model", help="run folder, .keras file or SavedModel folder")
    parser.add_argument("paths", nargs="+", help="image files and folders (read recursively)")
    parser.add_argument("--output", help="write rows to FILE.csv or FILE.json")
    parser.add_argument("--top-k", type=int, default=1, help="classes listed per image [default: 1]")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="binary models: probability of the second class needed to pick it "
                             "[default: 0.5]")
    parser.add_argument("--sort-into", metavar="DIR", help="copy each image into DIR/<class>/")
    add_tta_flag(parser)
    parser.add_argument("--batch-size", type=int, default=64, help="[default: 64]")
    return parser


def main(argv=None):
    return run_command(lambda: _run(build_parser().parse_args(argv)))


def _run(args):
    from catsdogs.classifier import load

    classifier = load(args.model)
    rows, skipped = predict_paths(classifier, args.paths, args.batch_size, args.top_k,
                                  args.threshold, tta=args.tta)
    for path, reason in skipped:
        print(f"skipped {display(path)}: {reason}")
    if not rows:
        raise CatsDogsError("no image could be classified", where=" ".join(args.paths),
                            fix="pass image files or folders holding JPEG/PNG/BMP/GIF images")
    multiclass = not classifier.is_binary
    width = min(60, max(len(display(r.path)) for r in rows))
    for row in rows:
        extra = "  " + ", ".join(f"{c} {p:.3f}" for c, p in row.top_k) if multiclass and args.top_k > 1 else ""
        print(f"{display(row.path):<{width}}  {row.predicted:<12} {row.probability:.4f}{extra}")
    print(f"{len(rows)} classified, {len(skipped)} skipped")
    if args.output:
        write_output(rows, skipped, args.output, multiclass)
        print(f"Wrote {args.output}")
    if args.sort_into:
        sort_into(rows, args.sort_into)
        print(f"Copied {len(rows)} images into {args.sort_into}/<class>/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
