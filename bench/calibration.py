"""How sure, honestly: calibration error before and after temperature scaling, and how well a
model's confidence tells its classes from other things.

    python bench/calibration.py --run RUN_DIR                        # a cats/dogs run
    python bench/calibration.py --run RUN_DIR --task cifar10         # a CIFAR-10 run

On the run's held-out split (cats/dogs: ../shared/data/cats_and_dogs/validation; CIFAR-10: its
test split) it prints the expected calibration error (15 bins) and negative log-likelihood of
the raw model; after a temperature fitted on the whole split (what training does; ECE measured
on the same images, so optimistic); and cross-fitted (T fitted on one half, measured on the
other, both ways, averaged: the honest figure); and with the temperature the run fitted at
training (on its validation split: honest too when that was a selection split carved from the
training images, as bench/train.py's protocol and notebooks/02 do). For a cats/dogs run it also
prints the
out-of-distribution rejection of CIFAR-10's non-animal test images (airplane, automobile,
ship, truck; 32x32, upscaled to the model's size as any photo is): AUROC of the max
probability (Hendrycks & Gimpel 2017) and the share rejected at the threshold that keeps 95 %
of the held-out photos.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402
from machine import describe, shared_data  # noqa: E402

OOD_CLASSES = ("airplane", "automobile", "ship", "truck")


def cross_fitted_ece(raw, labels, seed=0):
    """ECE after a temperature fitted on the other half of the images, averaged both ways."""
    from catsdogs.inference import calibrate

    halves = calibrate.random_halves(len(labels), seed)
    errors, temperatures = [], []
    for fit, measure in (halves, halves[::-1]):
        temperature = calibrate.fit_temperature(raw[fit], labels[fit])
        temperatures.append(temperature)
        errors.append(calibrate.expected_calibration_error(
            calibrate.apply_temperature(raw[measure], temperature), labels[measure]))
    return float(np.mean(errors)), temperatures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder")
    parser.add_argument("--task", choices=("catsdogs", "cifar10"), default="catsdogs")
    args = parser.parse_args()
    from catsdogs.data.datasets import find_images, load_labelled_folder
    from catsdogs.data.images import decode_many
    from catsdogs.inference import calibrate
    from catsdogs.inference.evaluate import ood_report
    from catsdogs.inference.tta import predict_arrays

    held_out = (shared_data("cats_and_dogs", "validation") if args.task == "catsdogs"
                else shared_data("cifar10", "test"))
    print(describe())
    classifier = catsdogs.load(args.run)
    names, split = load_labelled_folder(held_out, classifier.image_size)
    labels = np.array([classifier.class_names.index(names[i]) for i in split.labels])
    raw = predict_arrays(classifier, split.pixels, calibrated=False)
    report = calibrate.calibration_report(raw, labels)
    cross, temperatures = cross_fitted_ece(raw, labels)
    accuracy = float((raw.argmax(axis=1) == labels).mean())
    print(f"run: {args.run}  held out: {held_out} ({len(labels)} images, accuracy {accuracy:.4f})")
    print(f"{'':<34}{'ECE':>8}{'NLL':>9}")
    print(f"{'raw model':<34}{report['ece_before']:>8.4f}{report['nll_before']:>9.4f}")
    print(f"{'T fitted on all (T = %.3f)' % report['temperature']:<34}"
          f"{report['ece_after']:>8.4f}{report['nll_after']:>9.4f}")
    print(f"{'cross-fitted halves (T = %.2f, %.2f)' % tuple(temperatures):<34}{cross:>8.4f}")
    if classifier.temperature != 1.0:  # the run's own T, fitted at training on its validation
        own = calibrate.apply_temperature(raw, classifier.temperature)  # or selection split
        label = "the run's own T (%.3f)" % classifier.temperature
        print(f"{label:<34}"
              f"{calibrate.expected_calibration_error(own, labels):>8.4f}"
              f"{calibrate.negative_log_likelihood(own, labels):>9.4f}"
              "   (honest where the run chose on a selection split)")
    if args.task != "catsdogs":
        return
    cifar = shared_data("cifar10", "test")
    paths = [p for name in OOD_CLASSES for p in find_images(cifar / name)[0]]
    ood_pixels = decode_many(paths, classifier.image_size).pixels
    threshold = report["min_confidence_auto"]["threshold"]
    calibrated = calibrate.apply_temperature(raw, report["temperature"])
    ood = ood_report(calibrated, calibrate.apply_temperature(
        predict_arrays(classifier, ood_pixels, calibrated=False), report["temperature"]), threshold)
    print(f"out of distribution: {ood['images']} CIFAR-10 {'/'.join(OOD_CLASSES)} test images: "
          f"AUROC {ood['auroc']:.4f}; at min confidence {threshold:.3f} (keeps 95 % of the "
          f"held-out photos) {ood['rejected']:.1%} rejected as unknown, "
          f"{ood['in_distribution_rejected']:.1%} of the held-out photos")


if __name__ == "__main__":
    main()
