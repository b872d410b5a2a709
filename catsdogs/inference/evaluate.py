"""Measure a trained model on a folder of class sub-folders, with reports a person can read
(the library of `catsdogs evaluate`).

Writes metrics.json (loss, accuracy, per-class precision/recall/F1, ROC AUC for two classes),
confusion_matrix.json, plots/confusion_matrix.png and plots/most_wrong.png (the most confidently
wrong images) into OUT, by default `eval-<data folder name>/` beside the model.
"""

from pathlib import Path

import numpy as np

from catsdogs import runs
from catsdogs.errors import CatsDogsError, RunFailed
from catsdogs.inference.tta import predict_arrays, tta_mode

GALLERY_SIZE = 16  # most confidently wrong images shown


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
    (Mann-Whitney U, ties counted half), exact rather than Keras' thresholded estimate."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    positives, negatives = labels.sum(), len(labels) - labels.sum()
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average rank over each run of tied scores
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def compute_metrics(labels, probabilities, class_names):
    """Every number of the report from true labels and predicted probabilities."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities.argmax(axis=1)
    k = len(class_names)
    matrix = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    metrics = {
        "images": int(len(labels)),
        "loss": float(-np.log(picked).mean()),  # binary / categorical cross-entropy
        "accuracy": float((predicted == labels).mean()),
        "per_class": per_class_report(matrix, class_names),
        "confusion_matrix": matrix.tolist(),
    }
    if k == 2:
        metrics["roc_auc"] = roc_auc(labels, probabilities[:, 1])
    return metrics


def _labels_in_model_order(data_dir, class_names):
    from catsdogs.data.datasets import scan_class_folders

    folder_names, paths, folder_labels, skipped = scan_class_folders(data_dir)
    unknown = [n for n in folder_names if n not in class_names]
    if unknown:
        raise CatsDogsError(f"class folders {unknown} are not classes of the model {class_names}",
                            where=data_dir, fix="evaluate on folders named like the model's classes")
    to_model = np.array([class_names.index(n) for n in folder_names])
    return paths, to_model[folder_labels], skipped


def evaluate(classifier, data_dir, out=None, tta=None, batch_size=64):
    """Evaluate `classifier` on `data_dir` (class sub-folders) and write the report.

    Returns:
        dict: the metrics also saved as OUT/metrics.json (with "out" naming OUT).
    """
    from catsdogs import plots
    from catsdogs.data.images import decode_many

    from catsdogs.data.datasets import list_class_folders

    tta = tta_mode(tta)
    list_class_folders(data_dir)  # a wrong folder is one line before the model loads
    if isinstance(classifier, (str, Path)):
        from catsdogs.inference.classifier import load
        classifier = load(classifier)
    names = classifier.class_names
    paths, labels, skipped = _labels_in_model_order(data_dir, names)
    pixels, kept, bad, _ = decode_many(paths, classifier.image_size)
    labels, paths, skipped = labels[kept], [paths[i] for i in kept], skipped + bad
    if not len(labels):
        raise RunFailed("no readable images", where=data_dir,
                        fix="see skipped.csv beside the report for each file's reason")
    probabilities = predict_arrays(classifier, pixels, batch_size, tta=tta)
    metrics = compute_metrics(labels, probabilities, names)
    metrics.update(data=str(data_dir), model=str(classifier.source), tta=tta, skipped=len(skipped))

    out = Path(out) if out else classifier.source.parent / f"eval-{Path(data_dir).resolve().name}"
    runs.write_json(out / runs.METRICS_FILE, metrics)
    runs.write_json(out / "confusion_matrix.json", {"class_names": names, "rows_true_columns_predicted":
                                                     metrics["confusion_matrix"]})
    runs.write_csv(out / runs.SKIPPED_FILE, ["path", "reason"], skipped)
    plots.confusion_matrix(metrics["confusion_matrix"], names, out / runs.PLOTS_DIR / "confusion_matrix.png",
                           title=f"Confusion matrix on {Path(data_dir).name} "
                                 f"(accuracy {metrics['accuracy']:.1%})")
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:GALLERY_SIZE]
    if len(worst):
        plots.image_grid(pixels[worst], [f"true {names[labels[i]]}\npred {names[predicted[i]]} "
                                         f"{probabilities[i, predicted[i]]:.2f}" for i in worst],
                         out / runs.PLOTS_DIR / "most_wrong.png",
                         title="Most confidently wrong", columns=min(8, len(worst)))
    metrics["out"] = str(out)
    return metrics
