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


def measure(run_dir, test_dir):
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
    return row


def main():
    args = finished_runs_parser(__doc__).parse_args()
    print(describe(), flush=True)
    rows = [measure(run, args.test) for run in args.runs]
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
