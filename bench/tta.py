"""Test-time augmentation chosen on photos a run held out, then measured once on the test split.

    python bench/tta.py runs/bench-seeds-50/resnet-catsdogs-last-seed{1,2,3} \
        runs/bench-seeds-50/resnet-catsdogs-last-ensemble-1-2-3 \
        --test ../shared/data/cats_and_dogs/validation

For each finished run folder (or ensemble folder): the accuracy of every view set (none,
`flip`, `shift`: catsdogs/inference/tta.py) on the photos the run set aside to fit its
temperature (held out from training and from every choice: calibrate.held_out_photos; an
ensemble's members share them); the view set with the best accuracy there is the choice (a
tie goes to fewer views). Only then is the test split read: the choice's test accuracy and
expected calibration error (with the run's own temperature) beside the plain view's. Every
view set's test accuracy is printed too, marked as not chosen on, so the table shows what the
choice left on the table.
"""

import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import describe  # noqa: E402
from seeds import finished_runs_parser, test_photos  # noqa: E402

MODES = (None, "flip", "shift")  # fewest views first: a tie keeps the cheaper


def name(mode):
    return mode or "none"


def held_out(run_dir, classifier):
    """The photos `run_dir` fitted its temperature on (an ensemble: its first member's, which
    every member held out), in the model's class order."""
    from catsdogs.inference.calibrate import held_out_photos

    ensemble_file = run_dir / "ensemble.json"
    source = (Path(json.loads(ensemble_file.read_text())["members"][0])
              if ensemble_file.exists() else run_dir)
    split, labels, _ = held_out_photos(source, classifier)
    return split.pixels, labels


def measure(run_dir, test_dir):
    import catsdogs
    from catsdogs.inference.calibrate import expected_calibration_error
    from catsdogs.inference.tta import predict_arrays

    classifier = catsdogs.load(run_dir)
    pixels, labels = held_out(run_dir, classifier)
    chosen_on = {name(mode): float((predict_arrays(classifier, pixels, tta=mode).argmax(axis=1)
                                    == labels).mean()) for mode in MODES}
    choice = max(MODES, key=lambda mode: (chosen_on[name(mode)], -MODES.index(mode)))
    test_pixels, test_labels = test_photos(classifier, test_dir)  # read once, from here
    test = {}
    for mode in MODES:
        probabilities = predict_arrays(classifier, test_pixels, tta=mode)
        test[name(mode)] = {
            "accuracy": float((probabilities.argmax(axis=1) == test_labels).mean()),
            "ece": expected_calibration_error(probabilities, test_labels)}
    return {"run": str(run_dir), "held_out_images": len(labels), "held_out": chosen_on,
            "choice": name(choice), "test_chosen": test[name(choice)]["accuracy"],
            "ece_chosen": test[name(choice)]["ece"], "test_plain": test["none"]["accuracy"],
            "ece_plain": test["none"]["ece"], "test_every_view_set": test}


def main():
    args = finished_runs_parser(__doc__).parse_args()
    print(describe())
    rows = []
    for run_dir in args.runs:
        rows.append(measure(run_dir, args.test))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'run':<48}{'held-out acc. none/flip/shift':>31}{'choice':>8}{'test plain':>12}"
          f"{'test chosen':>13}{'ECE plain':>11}{'ECE chosen':>12}")
    for row in rows:
        held = "/".join(f"{row['held_out'][name(m)]:.1%}" for m in MODES)
        print(f"{Path(row['run']).name:<48}{held:>31}{row['choice']:>8}{row['test_plain']:>12.1%}"
              f"{row['test_chosen']:>13.1%}{row['ece_plain']:>11.4f}{row['ece_chosen']:>12.4f}")
    single = [row for row in rows if not (Path(row["run"]) / "ensemble.json").exists()]
    if len(single) > 1:
        for key in ("test_plain", "test_chosen"):
            values = [row[key] for row in single]
            print(f"{key}: {statistics.fmean(values):.1%} ± {statistics.stdev(values):.1%} over "
                  f"{len(values)} runs")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": describe(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
