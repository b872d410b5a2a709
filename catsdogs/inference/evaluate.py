"""Measure a trained model on a folder of class sub-folders, with reports a person can read
(the library of `catsdogs evaluate`).

Writes metrics.json (loss, accuracy, per-class precision/recall/F1, ROC AUC when both of two
classes are there, how many photos trained the model or chose its epoch (photos.json),
calibration error and log-likelihood before and after the run's temperature, out-of-
distribution rejection with --ood-dir), predictions.csv (every image, highest loss first),
confusion_matrix.json and, in plots/, the confusion matrix, the reliability diagram and the
most confidently wrong images (with Grad-CAM heatmaps) into OUT, by default
`eval-<data folder name>/` beside the model.
"""

from pathlib import Path

import numpy as np

from catsdogs import runs
from catsdogs.console import display, quiet_retracing
from catsdogs.errors import CatsDogsError, RunFailed
from catsdogs.inference.calibrate import (apply_temperature, expected_calibration_error,
                                          negative_log_likelihood, per_image_loss,
                                          rejection_threshold, reliability)
from catsdogs.inference.photo_roles import (warn_if_the_model_used,
                                           warn_if_they_fitted_the_temperature)
from catsdogs.inference.tta import predict_arrays, tta_mode

GALLERY_SIZE = 16  # most confidently wrong images shown
WORST_NAMED = 10  # highest-loss files named in the summary
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_FILE = "confusion_matrix.json"  # only evaluate writes it: marks its report folders


def per_class_report(matrix, class_names):
    """Precision, recall, F1 and support per class from a confusion matrix (true x predicted)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positive = np.diag(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positive / predicted, 0.0)
        recall = np.where(actual > 0, true_positive / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, actual)}


def roc_auc(labels, scores):
    """Area under the ROC curve: the chance a random positive outscores a random negative
    (Mann-Whitney U from SciPy's average ranks, ties counted half), exact rather than Keras'
    thresholded estimate."""
    from scipy.stats import rankdata

    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    positives, negatives = labels.sum(), len(labels) - labels.sum()
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(scores)  # tied scores share their average rank
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def compute_metrics(labels, probabilities, class_names):
    """Every number of the report from true labels and predicted probabilities."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, len(class_names))
    metrics = {
        "images": int(len(labels)),
        "loss": negative_log_likelihood(probabilities, labels),  # cross-entropy
        "accuracy": float((predicted == labels).mean()),
        "per_class": per_class_report(matrix, class_names),
        "confusion_matrix": matrix.tolist(),
    }
    if len(class_names) == 2:
        metrics["roc_auc"] = roc_auc(labels, probabilities[:, 1])
    return metrics


def confusion_matrix(labels, predicted, classes):
    """(classes, classes) counts: row = true class, column = predicted."""
    flat = np.asarray(labels) * classes + np.asarray(predicted)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def labels_in_model_order(data_dir, class_names):
    """(paths, labels as the model's class indices, skipped) of a folder of class sub-folders
    (one is enough: a test folder of one class measures its recall); a folder that is no class
    of the model is one line."""
    from catsdogs.data.datasets import in_model_order, scan_class_folders

    folder_names, paths, folder_labels, skipped = scan_class_folders(data_dir, min_classes=1)
    return paths, in_model_order(folder_labels, folder_names, class_names, data_dir), skipped


def default_out(model_path, data_dir):
    """Where the report goes when no folder is given: `eval-<data folder name>/` beside the
    model file."""
    return Path(model_path).parent / f"eval-{Path(data_dir).resolve().name}"


@quiet_retracing()  # its plots call new models (Grad-CAM's, a temperature's): no warning wall
def evaluate(classifier, data_dir, out=None, tta=None, batch_size=64, ood_dir=None,
             min_confidence=None, cache=None):
    """Evaluate `classifier` on `data_dir` (class sub-folders) and write the report.

    Args:
        classifier: a Classifier, or what `catsdogs.load` takes.
        data_dir: a folder of class sub-folders named like the model's classes.
        out: the report folder [default: `eval-<data name>/` beside the model].
        tta: test-time augmentation (None, "flip" or "shift").
        ood_dir: a folder of images of other things: how many are rejected as "unknown".
        min_confidence: the rejection threshold for `ood_dir` [default: calibration.json's
            threshold that keeps 95 % of validation images].
        cache: where the decoded images live, a data.cache.CacheConfig [default: auto]; from
            a disk cache (or with none) the model reads them a batch at a time.

    Returns:
        dict: the metrics also saved as OUT/metrics.json (with "out" naming OUT).
    """
    from catsdogs.data.cache import CacheConfig, Storage
    from catsdogs.data.datasets import decode_split, list_class_folders

    tta = tta_mode(tta)
    list_class_folders(data_dir, min_classes=1)  # a wrong folder: one line before the model
    if isinstance(classifier, (str, Path)):
        from catsdogs.inference.classifier import load
        classifier = load(classifier)
    names = classifier.class_names
    paths, labels, skipped = labels_in_model_order(data_dir, names)
    storage = Storage.of(cache or CacheConfig())
    storage.decide(len(paths), classifier.image_size)
    split, bad = decode_split(paths, labels, classifier.image_size, data_dir, storage)
    pixels, labels, paths, skipped = split.pixel_view(), split.labels, split.paths, skipped + bad
    if not len(labels):
        raise RunFailed("no readable images", where=data_dir,
                        fix="see skipped.csv beside the report for each file's reason")
    raw = predict_arrays(classifier, pixels, batch_size, tta=tta, calibrated=False)
    temperature = classifier.temperature_for(tta)
    probabilities = apply_temperature(raw, temperature)
    metrics = compute_metrics(labels, probabilities, names)
    metrics.update(data=str(data_dir), model=str(classifier.source), tta=tta, skipped=len(skipped),
                   calibration=calibration_metrics(raw, probabilities, labels, temperature))
    warn_if_the_model_used(classifier.source, paths, metrics)
    if temperature != 1.0:  # T = 1 was kept: nothing was fitted to these photos
        warn_if_they_fitted_the_temperature(classifier.source, paths, metrics)
    out = Path(out) if out else default_out(classifier.source, data_dir)
    if ood_dir is not None:
        threshold = rejection_threshold(classifier, min_confidence, tta)
        ood_pixels = _decode_folder(ood_dir, classifier.image_size)
        metrics["ood"] = {"folder": str(ood_dir), **ood_report(
            probabilities, predict_arrays(classifier, ood_pixels, batch_size, tta=tta), threshold)}
    # first: it marks the folder as evaluate's, so a rerun after a kill may write into it
    runs.write_json(out / CONFUSION_FILE, {"class_names": names, "rows_true_columns_predicted":
                                           metrics["confusion_matrix"]})
    metrics["worst"] = write_predictions(out / PREDICTIONS_FILE, paths, labels, probabilities, names)
    _write_report(out, metrics, names, skipped, data_dir)
    _plot_errors(out, classifier, pixels, labels, raw, probabilities, data_dir, temperature)
    metrics["out"] = str(out)
    return metrics


def calibration_metrics(raw, calibrated, labels, temperature):
    """Expected calibration error (15 bins) and negative log-likelihood, before and after the
    model's temperature."""
    return {"temperature": temperature,
            "ece_before": expected_calibration_error(raw, labels),
            "ece_after": expected_calibration_error(calibrated, labels),
            "nll_before": negative_log_likelihood(raw, labels),
            "nll_after": negative_log_likelihood(calibrated, labels)}


def ood_report(in_probabilities, ood_probabilities, threshold):
    """How well the max probability tells photos of the classes from other things (Hendrycks &
    Gimpel 2017's baseline): AUROC, and the shares rejected at `threshold`."""
    inside, outside = in_probabilities.max(axis=1), ood_probabilities.max(axis=1)
    scores = np.concatenate([inside, outside])
    in_distribution = np.concatenate([np.ones(len(inside), int), np.zeros(len(outside), int)])
    return {"images": int(len(outside)), "auroc": roc_auc(in_distribution, scores),
            "threshold": threshold, "rejected": float((outside < threshold).mean()),
            "in_distribution_rejected": float((inside < threshold).mean())}


def _decode_folder(folder, image_size):
    """Every readable image below `folder` (any layout), as pixels."""
    from catsdogs.data.datasets import find_images
    from catsdogs.data.images import decode_many

    if not Path(folder).is_dir():
        raise CatsDogsError("folder not found", where=folder, fix="check the path")
    paths, _ = find_images(folder)
    pixels = decode_many(paths, image_size).pixels
    if not len(pixels):
        raise CatsDogsError("no readable images", where=folder)
    return pixels


def write_predictions(path, paths, labels, probabilities, names):
    """predictions.csv, one row per image, sorted by loss, highest first (fastai's
    `top_losses`): path, true and predicted class, probability, loss, correct. Returns the
    worst rows as dicts."""
    losses = per_image_loss(probabilities, labels)
    predicted = probabilities.argmax(axis=1)
    order = np.argsort(-losses, kind="stable")
    rows = [[display(paths[i]), names[labels[i]], names[predicted[i]],
             f"{probabilities[i, predicted[i]]:.6f}", f"{losses[i]:.6f}",
             int(predicted[i] == labels[i])] for i in order]
    header = ["path", "true", "predicted", "probability", "loss", "correct"]
    runs.write_csv(path, header, rows)
    return [dict(zip(header, row)) for row in rows[:WORST_NAMED]]


def _write_report(out, metrics, names, skipped, data_dir):
    from catsdogs import plots

    runs.write_json(out / runs.METRICS_FILE, metrics)
    runs.write_csv(out / runs.SKIPPED_FILE, ["path", "reason"], skipped)
    plots.confusion_matrix(metrics["confusion_matrix"], names, out / runs.PLOTS_DIR / "confusion_matrix.png",
                           title=f"Confusion matrix on {Path(data_dir).name} "
                                 f"(accuracy {metrics['accuracy']:.1%})")


def _plot_errors(out, classifier, pixels, labels, raw, probabilities, data_dir, temperature):
    """The reliability diagram (raw, and with the `temperature` applied) and the most
    confidently wrong images (with Grad-CAM heatmaps of the class they were mistaken for, when
    the Keras model is there)."""
    from catsdogs import plots
    from catsdogs.inference.explain import overlay

    names = classifier.class_names
    plots.reliability_diagram(
        [reliability(raw, labels)] + ([reliability(probabilities, labels)] if temperature != 1 else []),
        ["uncalibrated", f"temperature {temperature:.2f}"], out / runs.PLOTS_DIR / "reliability.png",
        title=f"Reliability on {Path(data_dir).name}")
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:GALLERY_SIZE]
    if not len(worst):
        return
    captions = [f"true {names[labels[i]]}\npred {names[predicted[i]]} "
                f"{probabilities[i, predicted[i]]:.2f}" for i in worst]
    plots.image_grid(pixels[worst], captions, out / runs.PLOTS_DIR / "most_wrong.png",
                     title="Most confidently wrong", columns=min(8, len(worst)))
    if classifier.model is not None:
        heatmaps, _ = classifier.explain(pixels[worst], predicted[worst])
        plots.image_grid([overlay(pixels[i], h) for i, h in zip(worst, heatmaps)], captions,
                         out / runs.PLOTS_DIR / "most_wrong_gradcam.png",
                         title="Most confidently wrong: where the mistaken class was seen (Grad-CAM)",
                         columns=min(8, len(worst)))
