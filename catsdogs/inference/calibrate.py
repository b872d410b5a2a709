"""How sure is 0.97: temperature scaling (Guo et al. 2017), calibration error, "unknown".

A CNN trained with cross-entropy is over-confident: of the photos it calls 97 % sure, fewer
than 97 % are right. One temperature T, fitted on held-out images to minimise the negative
log-likelihood, softens every prediction the same way (logits / T) without changing which
class wins, so accuracy is untouched and the probabilities mean what they say. Our models end
in probabilities, not logits: log p is the logit up to a constant the softmax ignores (for one
sigmoid unit, log(p / (1 - p))), so T applies to any saved model and any export.

calibration.json, beside a run's model.keras, holds T, what it was fitted on, the calibration
error before and after, and the confidence threshold that keeps a chosen share of validation
images (`predict --min-confidence auto`). Without it, T is 1: old run folders work as before.
"""

import dataclasses
from pathlib import Path

import numpy as np

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.data.datasets import MIN_CALIBRATION_IMAGES
from catsdogs.errors import CatsDogsError
from catsdogs.inference.photo_roles import (FITTED_FILES, check_same_photos, photos_in_role,
                                           used_by_the_model)
from catsdogs.inference.runtimes import as_class_probabilities

CALIBRATION_FILE = runs.CALIBRATION_FILE
TEMPERATURE_BOUNDS = (0.05, 20.0)  # the search's range of T
ECE_BINS = 15  # Guo et al.'s bins for the expected calibration error
DEFAULT_KEEP = 0.95  # `--min-confidence auto` keeps this share of validation images
UNKNOWN = "unknown"  # the label of a prediction below --min-confidence
EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] before taking logs


def as_logits(probabilities):
    """Logits whose softmax (or sigmoid, for one column) gives `probabilities` back."""
    p = np.clip(np.asarray(probabilities, np.float64), EPSILON, 1 - EPSILON)
    return np.log(p / (1 - p)) if p.shape[-1] == 1 else np.log(p)


def apply_temperature(probabilities, temperature):
    """`probabilities` (n, 1 | classes) as a model would give them with its logits divided by
    `temperature`, in the same shape."""
    if temperature == 1.0:
        return np.asarray(probabilities)
    logits = as_logits(probabilities) / temperature
    if logits.shape[-1] == 1:
        return 1 / (1 + np.exp(-logits))
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)


def per_image_loss(probabilities, labels):
    """-log p(true class) of each image (cross-entropy), p clipped at EPSILON."""
    p = as_class_probabilities(probabilities)
    return -np.log(np.clip(p[np.arange(len(labels)), labels], EPSILON, 1))


def negative_log_likelihood(probabilities, labels):
    """Mean -log p(true class): the loss temperature scaling minimises."""
    return float(per_image_loss(probabilities, labels).mean())


def reliability(probabilities, labels, bins=ECE_BINS):
    """Per equal-width confidence bin: (mean confidence, accuracy, count); None where empty.
    The reliability diagram plots it; expected_calibration_error sums it."""
    p = as_class_probabilities(probabilities)
    confidence, correct = p.max(axis=1), p.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    sums = [np.bincount(which, weights=values, minlength=bins) for values in (confidence, correct)]
    return [(float(sums[0][b] / n), float(sums[1][b] / n), int(n)) if n else (None, None, 0)
            for b, n in enumerate(counts)]


def expected_calibration_error(probabilities, labels, bins=ECE_BINS):
    """Confidence vs accuracy over equal-width confidence bins, weighted by bin size (Guo et
    al.'s ECE): 0 for a perfectly calibrated model."""
    rows = reliability(probabilities, labels, bins)
    total = sum(count for _, _, count in rows)
    return float(sum(count / total * abs(accuracy - confidence)
                     for confidence, accuracy, count in rows if count))


def fit_temperature(probabilities, labels):
    """The temperature minimising the negative log-likelihood of `labels` (Guo et al.'s
    temperature scaling), by SciPy's bounded scalar minimiser on log T."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels)
    if len(labels) < 2:
        raise CatsDogsError("calibration needs at least two held-out images",
                            fix="calibrate on a folder of class sub-folders with more images")
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(apply_temperature(probabilities, np.exp(log_t)),
                                              labels),
        bounds=np.log(TEMPERATURE_BOUNDS), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def at_bound(temperature):
    """Whether a fitted temperature ran to the search's edge (within 1 %): the likelihood
    still fell there, so the data asked for something T cannot give (e.g. a model that is
    right on few photos) and the number itself means nothing."""
    return any(abs(np.log(temperature / bound)) < 0.01 for bound in TEMPERATURE_BOUNDS)


def random_halves(count, seed=0):
    """Indices 0..count-1 in two halves of a seeded permutation: fit on one, score the other."""
    order = np.random.default_rng(seed).permutation(count)
    return order[: count // 2], order[count // 2:]


def cross_fitted(probabilities, labels, seed=0):
    """What a temperature does to photos it was not fitted on: the photos split in two halves
    (seeded), T fitted on each half scales the other. Returns (raw NLL, NLL and ECE with the
    cross-fitted temperatures), over all photos: the ECE after calibration that the photos T
    was fitted on would flatter."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    halves = random_halves(len(labels), seed)
    scaled = np.empty_like(as_class_probabilities(probabilities))
    for fit_on, score_on in (halves, halves[::-1]):
        temperature = fit_temperature(probabilities[fit_on], labels[fit_on])
        scaled[score_on] = as_class_probabilities(
            apply_temperature(probabilities[score_on], temperature))
    return (negative_log_likelihood(probabilities, labels),
            negative_log_likelihood(scaled, labels), expected_calibration_error(scaled, labels))


def checked_temperature(probabilities, labels):
    """The temperature to keep, and why: a fit is kept only where it can be trusted.

    T stays 1 when there are fewer than MIN_CALIBRATION_IMAGES photos (a temperature fitted on
    40 photos ran to the search's bound and flattened every probability to ~50 %), when the
    fit runs to the search's bound, or when temperatures fitted on one half of the photos do
    not lower the negative log-likelihood of the other half (then T only fits this sample's
    noise). Returns (temperature, fitted temperature or None, reason kept or refused, check)."""
    labels = np.asarray(labels)
    if len(labels) < MIN_CALIBRATION_IMAGES:
        return 1.0, None, (f"kept T = 1: {len(labels)} held-out photos, fewer than the "
                           f"{MIN_CALIBRATION_IMAGES} a temperature needs"), {}
    fitted = fit_temperature(probabilities, labels)
    if at_bound(fitted):
        return 1.0, fitted, (f"kept T = 1: the fit ran to the search's bound (T = {fitted:.3g}), "
                             "so the photos do not pin a temperature down"), {}
    raw_nll, cross_nll, cross_ece = cross_fitted(probabilities, labels)
    check = {"nll_raw": raw_nll, "nll_cross_fitted": cross_nll, "ece_cross_fitted": cross_ece}
    if cross_nll >= raw_nll:
        return 1.0, fitted, (f"kept T = 1: temperatures fitted on half of the photos raised the "
                             f"other half's negative log-likelihood ({raw_nll:.4f} -> "
                             f"{cross_nll:.4f})"), check
    return fitted, fitted, (f"T = {fitted:.3f} lowered the negative log-likelihood of photos "
                            f"it was not fitted on ({raw_nll:.4f} -> {cross_nll:.4f}, fitted on "
                            "halves)"), check


def confidence_threshold(probabilities, keep=DEFAULT_KEEP):
    """The max-probability that `keep` of these images reach: below it a prediction is
    "unknown" (`predict --min-confidence auto`)."""
    confidence = as_class_probabilities(probabilities).max(axis=1)
    return float(np.quantile(confidence, 1 - keep))


def calibration_report(probabilities, labels, keep=DEFAULT_KEEP):
    """Fit T on held-out predictions where that can be trusted (`checked_temperature`);
    everything calibration.json holds."""
    temperature, fitted, reason, check = checked_temperature(probabilities, labels)
    calibrated = apply_temperature(probabilities, temperature)
    ece_before = expected_calibration_error(probabilities, labels)
    return {"temperature": temperature, "images": int(len(labels)),
            "fitted_temperature": fitted, "decision": reason, "cross_check": check,
            "ece_before": ece_before,
            "ece_after": expected_calibration_error(calibrated, labels),  # on the fitting photos
            # on photos T was not fitted on (halves); T = 1 fitted nothing: the ECE before
            "ece_after_cross_fitted": check["ece_cross_fitted"] if temperature != 1.0
            else ece_before,
            "nll_before": negative_log_likelihood(probabilities, labels),
            "nll_after": negative_log_likelihood(calibrated, labels),
            "min_confidence_auto": {"keep": keep,
                                    "threshold": confidence_threshold(calibrated, keep)}}


def views_calibration(model, pixels, labels, batch_size=64):
    """{mode: calibration_report} for each set of test-time views (tta.TTA_MODES), fitted on
    their averaged predictions of the same held-out photos by the same rules: `--tta` applies
    its own temperature and threshold (Classifier.views_calibration)."""
    from catsdogs.inference.runtimes import keras_probabilities
    from catsdogs.inference.tta import TTA_MODES, averaged_views

    return {mode: calibration_report(averaged_views(
        lambda batch: keras_probabilities(model, batch, len(batch)), pixels, mode,
        batch_size=batch_size), labels) for mode in TTA_MODES}


def rejection_threshold(classifier, min_confidence, tta=None):
    """A number, or "auto"/None: the threshold calibration.json stored for its share kept, for
    predictions averaged over `tta`'s views where it stored one for them."""
    if UNKNOWN in classifier.class_names:
        raise CatsDogsError(f"a class of the model is named {UNKNOWN!r}, the label of photos "
                            "under --min-confidence: the two would be one", where=classifier.source,
                            fix="drop --min-confidence, or train with that folder renamed")
    if min_confidence not in (None, "auto"):
        return float(min_confidence)
    stored = classifier.views_calibration(tta).get("min_confidence_auto") or \
        classifier.calibration.get("min_confidence_auto")
    if not stored:
        raise CatsDogsError("no stored threshold for --min-confidence auto", where=classifier.source,
                            fix="calibrate the run first (catsdogs calibrate RUN_DIR), or give a "
                                "number such as --min-confidence 0.8")
    return float(stored["threshold"])


def with_temperature(model, temperature):
    """A Keras model whose probabilities are `model`'s with its logits divided by
    `temperature`, built from Keras layers and ops only (no custom layer), so every export of
    it carries the calibration and loads anywhere Keras models load.

    The logits come from a copy of the probability head without its activation, not from
    log(p / (1 - p)): that division spans ~1e7 near p = 1, which full-integer TFLite cannot
    hold in one int8 scale, and the int8 model then answered one class for every photo."""
    import keras
    from keras import ops

    if temperature == 1.0:
        return model
    head = model.layers[-1]
    activation = getattr(head, "activation", None)
    if isinstance(head, keras.layers.Dense) and activation in (keras.activations.sigmoid,
                                                               keras.activations.softmax):
        logits_layer = keras.layers.Dense(head.units, name=f"{head.name}_logits")
        logits = logits_layer(head.input)
        logits_layer.set_weights(head.get_weights())
        out = keras.layers.Activation(activation, name=f"{head.name}_calibrated")(
            logits / temperature)
    else:  # a head of another shape: invert its probabilities (exact in float, not in int8)
        p = ops.clip(model.output, EPSILON, 1 - EPSILON)
        if model.output_shape[-1] == 1:
            out = ops.sigmoid(ops.log(p / (1 - p)) / temperature)
        else:
            out = ops.softmax(ops.log(p) / temperature, axis=-1)
    # model.input: the one input tensor itself (model.inputs, a list of one, makes Keras warn
    # at every call with a plain tensor that the structures differ)
    return keras.Model(model.input, out, name=f"{model.name}_calibrated")


def _saved_model(model, run_dir, class_names):
    """The run's saved_model/; none where Keras does not run on TensorFlow (backends.py), with a
    line saying how to make it later."""
    from catsdogs.backends import tensorflow_trains, why_not_tensorflow
    from catsdogs.console import log

    if not tensorflow_trains():
        log().info(f"saved_model/: not written ({why_not_tensorflow()}); model.keras holds "
                   "the model, and `catsdogs export` makes it on TensorFlow")
        return
    from catsdogs.inference.saved_model import write_saved_model

    write_saved_model(model, run_dir / runs.SAVED_MODEL_DIR, class_names)


def calibrate_run(run_dir, model, pixels, labels, class_names, fitted_on, batch_size=64,
                  why_none=None, fitted_files=None):
    """Fit the temperature of the Keras `model` of `run_dir` on held-out images; write
    calibration.json and the run's saved_model/ with the temperature inside it. Without
    images (`pixels` None), T = 1 and `why_none` (or the usual reason) is the decision.
    `fitted_files`, the images' real paths, are kept in calibration.json (`catsdogs calibrate`:
    they may not be those photos.json lists as having fitted it, e.g. a refit on DATA).

    Returns:
        dict: what calibration.json holds.
    """
    from pathlib import Path

    from catsdogs import plots
    from catsdogs.inference.runtimes import keras_probabilities

    run_dir = Path(run_dir)
    if pixels is None:
        report = {"temperature": 1.0, "images": 0, "fitted_on": None,
                  "decision": why_none or "kept T = 1: no held-out photos were set aside to "
                                          "fit it on (--calibration-split 0, or a share of "
                                          f"fewer than the {MIN_CALIBRATION_IMAGES} photos a "
                                          "temperature needs); catsdogs calibrate RUN DATA "
                                          "fits one"}
        runs.write_json(run_dir / CALIBRATION_FILE, report)
        _saved_model(model, run_dir, class_names)
        return report
    raw = keras_probabilities(model, pixels, batch_size)
    report = {**calibration_report(raw, labels), "fitted_on": str(fitted_on),
              "tta": views_calibration(model, pixels, labels, batch_size),
              **({FITTED_FILES: [str(path) for path in fitted_files]}
                 if fitted_files is not None else {})}
    runs.write_json(run_dir / CALIBRATION_FILE, report)
    _saved_model(with_temperature(model, report["temperature"]), run_dir, class_names)
    plots.reliability_diagram(
        [reliability(raw, labels), reliability(apply_temperature(raw, report["temperature"]), labels)],
        ["before", f"after (T = {report['temperature']:.2f})"],
        run_dir / runs.PLOTS_DIR / "reliability.png",
        title=f"Calibration on the {len(labels)} images T was fitted on: ECE "
              f"{report['ece_before']:.3f} -> {report['ece_after']:.3f} "
              f"({report['ece_after_cross_fitted']:.3f} on images it was not fitted on)")
    return report


def _without_photos_the_model_used(split, source, data_dir):
    """`split` less the photos that trained the model or chose its epoch (its run's
    photos.json): a temperature fitted on them comes out too sharp, so it is fitted on the
    others, and the count left out is said."""
    from catsdogs.console import log

    if tested := photos_in_role(source, split.paths, "tested_once"):
        log().warning(f"of these {len(split)} photos, {tested} are the model's test split (its "
                      f"run's {runs.PHOTOS_FILE}): with a temperature fitted on them, its test "
                      "figures are no longer on photos no choice was made on")
    used = np.asarray(used_by_the_model(source, split.paths), dtype=bool)
    if not used.any():
        return split
    if used.all():
        raise CatsDogsError(f"all {len(split)} of these photos trained the model or chose its "
                            f"epoch (its run's {runs.PHOTOS_FILE})", where=data_dir,
                            fix="give a folder of labelled photos the model never saw")
    log().warning(f"of these {len(split)} photos, {used.sum()} trained the model or chose its "
                  f"epoch (its run's {runs.PHOTOS_FILE}): the temperature is fitted on the "
                  f"other {(~used).sum()}")
    return split.subset(np.flatnonzero(~used))


def _chiefs_share(config, run_dir):
    """The shard (worker, workers) whose photos a run's temperature was fitted on: worker 0's,
    of as many workers as trained the run (config.json's `workers`); a multi-worker run of a
    version that did not record them cannot be cut again."""
    if config.strategy != "multiworker":
        return 0, 1
    if not config.workers:
        raise CatsDogsError("this run was trained by several workers, and its config.json (of "
                            "an older catsdogs) does not say how many, so the photos set aside "
                            "for its temperature cannot be found again", where=run_dir,
                            fix="give DATA_DIR: a folder of labelled photos the model never used")
    return 0, config.workers


def held_out_split(run_dir, classifier, data_dir=None, cache=None):
    """(pixels, labels in the model's class order, where from): held_out_photos' split, its
    pixels read a batch at a time from a disk cache (Split.pixel_view)."""
    split, labels, source = held_out_photos(run_dir, classifier, data_dir, cache)
    return split.pixel_view(), labels, source


def held_out_photos(run_dir, classifier, data_dir=None, cache=None):
    """(Split, labels in the model's class order, where from): `data_dir`'s images, or the
    photos the run set aside to calibrate on (read again exactly as training read them).
    A run made before photos were set aside has only the validation split that chose its
    epoch: it is used, and a warning says so. `cache` ({cache, cache_dir}: the flags given)
    says where the decoded images live, instead of the run's settings (or auto)."""
    from catsdogs.console import log
    from catsdogs.data.cache import CacheConfig, Storage
    from catsdogs.data.datasets import in_model_order, load_image_data, load_labelled_folder

    cache = cache or {}
    if data_dir is None:
        config = dataclasses.replace(cfg.read_run_config(Path(run_dir) / runs.CONFIG_FILE),
                                     **cache)
        data = load_image_data(config, classifier.image_size, _chiefs_share(config, run_dir))
        if data.calibration is not None:
            split, source = data.calibration, f"calibration ({data.sources['calibration']})"
            check_same_photos(run_dir, {"fitted_the_temperature": {
                "files": [str(p) for p in split.paths]}}, fix="give DATA_DIR: a folder of "
                "labelled photos the model never used")
        elif config.calibration_split and config.calibration_minimum:  # none, by the minimum
            raise CatsDogsError(f"every held-out photo of this run chose its epoch (a "
                                f"{config.calibration_split:.0%} share was fewer than the "
                                f"{config.calibration_minimum} a temperature needs), so none "
                                "can fit a temperature", where=run_dir,
                                fix="give DATA_DIR: a folder of other labelled photos")
        else:
            log().warning("This run set no photos aside for calibration: fitting on its "
                          "validation split, which chose its epoch, so the temperature may be "
                          "too sharp; give a folder of other labelled photos to avoid that")
            split, source = data.val, f"validation ({data.sources['validation']})"
        names = data.class_names
    else:
        names, split = load_labelled_folder(data_dir, classifier.image_size,
                                            Storage.of(CacheConfig(**cache)))
        source = str(data_dir)
        split = _without_photos_the_model_used(split, classifier.source, data_dir)
    return split, in_model_order(split.labels, names, classifier.class_names,
                                 data_dir or run_dir), source
