"""Precise BatchNorm statistics on finished runs: held-out and test accuracy before and after.

    python bench/precise_bn.py runs/bench-seeds-50/resnet-catsdogs-last-seed{1,2,3} \
        --test ../shared/data/cats_and_dogs/validation

For each finished run folder: its model as trained, then the same weights with every
BatchNormalization layer's statistics recomputed over the run's own training photos
(un-augmented, full size: catsdogs/training/precise_bn.py, what `train --precise-bn` does at
the end of a run). Both are scored on the photos the run held out (its calibration photos:
nothing trained on them) and on the test split: accuracy, negative log-likelihood and expected
calibration error (raw probabilities: the temperature was fitted for the model as trained).
Nothing is written to the run folders. Prints one row per run and the mean ± sample standard
deviation of each column.

--write DIR also copies each run folder (without its resume state) to DIR/<its name> with the
recomputed model in it and `precise_bn` set in its config.json: a run as `train --precise-bn`
would have left it, before calibration. Then, as a user would:

    python -m catsdogs calibrate DIR/RUN                  # each: its temperatures, saved_model/
    python -m catsdogs ensemble DIR/RUN... --out DIR/ENSEMBLE
    python bench/tta.py DIR/RUN... DIR/ENSEMBLE --test ../shared/data/cats_and_dogs/validation
"""

import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import describe  # noqa: E402
from seeds import finished_runs_parser, spread, test_photos  # noqa: E402


def run_photos(run_dir, classifier):
    """(training pixels, held-out pixels, held-out labels) of a run, read as it read them."""
    from catsdogs import config as cfg
    from catsdogs import runs
    from catsdogs.data.datasets import load_image_data

    config = cfg.read_run_config(Path(run_dir) / runs.CONFIG_FILE)
    data = load_image_data(dataclasses.replace(config, cache="ram"), classifier.image_size)
    return data.train.pixels, data.calibration.pixels, data.calibration.labels


def figures(classifier, pixels, labels):
    from catsdogs.inference.calibrate import expected_calibration_error, negative_log_likelihood

    probabilities = classifier.probabilities(pixels, calibrated=False)
    return {"accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
            "nll": negative_log_likelihood(probabilities, labels),
            "ece": expected_calibration_error(probabilities, labels)}


def write_copy(run_dir, model, out):
    """`run_dir` copied to out/<name> (no checkpoints) with `model` as its model.keras."""
    import shutil

    from catsdogs import runs

    copy = Path(out) / Path(run_dir).name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(runs.CHECKPOINTS_DIR))
    with runs.atomic_path(copy / runs.MODEL_FILE) as temp:
        model.save(temp)
    config = json.loads((copy / runs.CONFIG_FILE).read_text())
    runs.write_json(copy / runs.CONFIG_FILE, {**config, "precise_bn": True})
    return copy


def measure(run_dir, test_dir, out=None):
    import catsdogs
    from catsdogs.training.precise_bn import recompute_statistics

    classifier = catsdogs.load(run_dir)
    train, held_pixels, held_labels = run_photos(run_dir, classifier)
    test_pixels, test_labels = test_photos(classifier, test_dir)
    row = {"run": str(run_dir)}
    for label in ("as trained", "precise BN"):
        if label == "precise BN":
            recompute_statistics(classifier.model, train)
        row[label] = {"held_out": figures(classifier, held_pixels, held_labels),
                      "test": figures(classifier, test_pixels, test_labels)}
    if out is not None:
        row["written"] = str(write_copy(run_dir, classifier.model, out))
    return row


def main():
    parser = finished_runs_parser(__doc__)
    parser.add_argument("--write", metavar="DIR",
                        help="also write each run with its recomputed model under DIR")
    args = parser.parse_args()
    print(describe(), flush=True)
    rows = [measure(run, args.test, args.write) for run in args.runs]
    for row in rows:
        print(json.dumps(row), flush=True)
    print(f"{'':<12}{'held-out acc':>14}{'held-out NLL':>14}{'test acc':>14}{'test NLL':>12}"
          f"{'test ECE':>12}")
    for label in ("as trained", "precise BN"):
        cells = [spread([row[label][where][what] for row in rows], percent=what == "accuracy")
                 for where, what in (("held_out", "accuracy"), ("held_out", "nll"),
                                     ("test", "accuracy"), ("test", "nll"), ("test", "ece"))]
        print(f"{label:<12}" + "".join(f"{cell:>14}" for cell in cells))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
