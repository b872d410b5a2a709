"""Find the mislabeled photos: out-of-fold predictions, k-fold accuracy and cleanlab's ranking of
likely label errors (the library of `catsdogs doctor DATA --label-issues`).

A model that trained on an image with a wrong label has learnt to agree with that label, so here
every image is judged by a model that never saw it. The images are dealt into K stratified,
seeded folds; for each fold, `catsdogs.train` trains the preset on the other K-1 folds (a
share of them choosing the best epoch, so the held-out fold decides nothing) and that model
predicts the held-out fold. From these out-of-fold probabilities cleanlab's confident learning
(Northcutt, Jiang and Chuang 2021) estimates how often each class is labelled as each other one
and flags the images whose given label is least believable, most suspect first (lowest
self-confidence: the probability the model gives the given label). The same held-out
predictions give the k-fold accuracy: each fold's, their mean and standard deviation.

The output folder (default `label-audit-<data folder name>/` in the current folder):

    folds.json        settings, each finished fold (images, accuracy, seconds), k-fold summary
    fold-<k>/oof.npy  the held-out images' probabilities (rows: the fold's images in path order)
    fold-<k>/run/     the fold's run folder (config.json, model.keras, history.csv, metrics.json)
    label_issues.csv  rank, path, given label, suggested label, self-confidence
    label_issues.png  the top suspects, each with its given and suggested label

Resumable: a fold trains on a tree of links to the original files (train/: the other folds,
validation/: the held-out one), so each fold is an ordinary run folder that `catsdogs.train`
starts and `catsdogs.resume` continues. An audit killed at any point and started again with the
same command skips the finished folds and resumes the one it was in; other settings, or
changed files, are refused. The data folder is only ever read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.config import setting
from catsdogs.console import display, log, name_some
from catsdogs.data.datasets import Split, scan_class_folders
from catsdogs.errors import CatsDogsError, RunFailed

DEFAULT_PRESET = "fast-catsdogs"  # k models to train: the quickest preset that reads photos well
# Each fold's share of its training images that chooses the best epoch: the held-out fold then
# only measures, and its accuracy is not read high by the choice (issue #28's protocol).
SELECTION_SPLIT = 0.15
MIN_EXTRA_PER_CLASS = 2  # beyond one per fold: a class needs one to train and one to choose on
GALLERY_SIZE = 32  # suspects shown in label_issues.png
SUMMARY_NAMED = 10  # suspects named in the printed summary
RECORD_FILE = "folds.json"
ISSUES_FILE = "label_issues.csv"
GALLERY_FILE = "label_issues.png"
ISSUES_HEADER = ["rank", "path", "given_label", "suggested_label", "self_confidence"]


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Everything `catsdogs doctor DATA --label-issues` needs; stored (with the files'
    fingerprint) in folds.json, which a restarted audit must match."""

    data: str | None = setting(None, "(folder) class sub-folders, or train/ and validation/ of "
                                     "them (both audited)")
    folds: int = setting(5, "(count) models trained, each predicting the images it never saw")
    preset: str = setting(DEFAULT_PRESET, "(name) the preset every fold trains, see catsdogs "
                                          "train --list-presets")
    epochs: int | None = setting(None, "(count) epochs per fold; default: the preset's")
    batch_size: int | None = setting(None, "(images) per training step; default: the preset's")
    seed: int = setting(42, "(int) deals the folds and seeds each fold's training")
    out_dir: str | None = setting(None, "(folder) the audit's folder, kept to resume it; "
                                        "default: label-audit-<data folder name>")

    def __post_init__(self):
        for name, value, least in (("folds", self.folds, 2), ("epochs", self.epochs, 1),
                                   ("batch_size", self.batch_size, 1)):
            if value is not None and (not isinstance(value, int) or value < least):
                raise CatsDogsError(f"bad value for --{cfg.flag_name(name)}: expected an "
                                    f"integer >= {least}, received {value!r}")

    @property
    def folder(self):
        """Where the audit is kept."""
        return Path(self.out_dir or f"label-audit-{Path(self.data).resolve().name}")


@dataclasses.dataclass(frozen=True)
class LabelIssue:
    """One likely label error: `rank` 1 is the most suspect."""

    rank: int
    path: str
    given: str
    suggested: str  # the class the out-of-fold model gives the most probability
    self_confidence: float  # the out-of-fold probability of the given label

    def row(self):
        return [self.rank, self.path, self.given, self.suggested, f"{self.self_confidence:.6f}"]


@dataclasses.dataclass
class AuditImages:
    """The audited images: decoded once, for the held-out predictions and the gallery."""

    class_names: list[str]
    split: Split  # pixels at the preset's size, given labels, paths, SHA-256 of each file
    places: list[tuple[str, str]]  # (split folder inside the data folder or ".", path inside
    #                                 its class folder): where a copy puts each image


@dataclasses.dataclass
class LabelAudit:
    """A finished audit: out-of-fold probabilities, k-fold accuracy and the suspects."""

    folder: Path
    images: AuditImages
    fold_of: np.ndarray  # (n,) the fold (0-based) that held out each image
    probabilities: np.ndarray  # (n, classes) out-of-fold
    fold_accuracies: list[float]
    issues: list[LabelIssue]

    @property
    def mean_accuracy(self):
        return float(np.mean(self.fold_accuracies))

    @property
    def std_accuracy(self):
        """The sample standard deviation across folds (ddof=1): the spread of one fold's
        accuracy, not the error of the mean."""
        return float(np.std(self.fold_accuracies, ddof=1))


# ---------------------------------------------------------------- folds


def stratified_folds(labels, folds, seed):
    """The fold (0..folds-1) of each image: each class's images shuffled by `seed` and dealt
    round the folds in turn, continuing where the previous class stopped, so every fold holds
    each class in proportion and the folds differ in size by at most one image.

    Example:
        >>> stratified_folds(np.array([0, 0, 0, 1, 1, 1]), 3, seed=0).tolist()
        [1, 2, 0, 2, 1, 0]
    """
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    dealt = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        fold_of[members] = (np.arange(len(members)) + dealt) % folds
        dealt += len(members)
    return fold_of


def _check_class_counts(labels, class_names, folds, where):
    """Every class can give each fold a held-out image and still train and choose an epoch."""
    counts = np.bincount(labels, minlength=len(class_names))
    needed = folds + MIN_EXTRA_PER_CLASS
    for name, count in zip(class_names, counts):
        if count < needed:
            raise CatsDogsError(f"class {name!r} has {count} usable images, too few for {folds} "
                                f"folds (needs {needed}: one held out per fold, and two to train "
                                f"and choose the epoch on)", where=where,
                                fix="add images to the class, or pass a smaller --folds")


# ---------------------------------------------------------------- the images


def _scan(data_dir):
    """(class names, paths, labels, places) of every image below `data_dir`: its class
    sub-folders, or those of its train/ and validation/ together. No file is opened."""
    from catsdogs.data.doctor import splits_of

    data_dir = Path(data_dir)
    class_names, paths, labels, places = None, [], [], []
    for folder in splits_of(data_dir).values():
        names, found, found_labels, _ = scan_class_folders(folder)  # non-images: not audited
        if class_names is not None and names != class_names:
            raise CatsDogsError(f"classes {names} differ from {class_names}", where=folder,
                                fix="use the same class sub-folders in every split")
        class_names = names
        prefix = folder.relative_to(data_dir).as_posix()
        paths += found
        labels.append(found_labels)
        places += [(prefix, Path(p).relative_to(folder / names[label]).as_posix())
                   for p, label in zip(found, found_labels)]
    return class_names, paths, np.concatenate(labels), places


def scan_audit_images(data_dir, folds):
    """The image files below `data_dir` with their classes, checked for `folds`; nothing is
    opened, so a wrong folder or a small class is one line at once.

    Raises:
        CatsDogsError: no class folders, or a class with too few images for `folds`.
    """
    scanned = _scan(data_dir)
    class_names, _, labels, _ = scanned
    _check_class_counts(labels, class_names, folds, data_dir)
    return scanned


def decode_audit_images(scanned, data_dir, image_size, folds):
    """The scanned images decoded once at `image_size`; unreadable files left out (and the
    class counts checked again without them)."""
    from catsdogs.data.images import decode_many

    class_names, paths, labels, places = scanned
    log().info(f"Decoding {len(paths)} images from {display(data_dir)}")
    pixels, kept, unreadable, digests = decode_many(paths, image_size)
    split = Split(pixels, labels[kept], [paths[i] for i in kept], digests)
    if unreadable:
        log().warning("\n".join([f"Left out {len(unreadable)} unreadable file(s) (python -m "
                                 f"catsdogs.doctor lists them all)"] + name_some(
            [f"{display(path)}: {reason}" for path, reason in unreadable])))
    _check_class_counts(split.labels, class_names, folds, data_dir)
    return AuditImages(class_names, split, [places[i] for i in kept])


def _fingerprint(images):
    """SHA-256 over every audited file's place, label and content: a restarted audit must see
    the same files, or its finished folds predicted other images."""
    digest = hashlib.sha256()
    for (prefix, inner), label, content in zip(images.places, images.split.labels,
                                               images.split.digests):
        digest.update(f"{prefix}/{inner}\t{images.class_names[label]}\t{content}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- one fold


def _link(source, link):
    """A symbolic link at `link` to `source`; a hard link, or at last a copy, where the
    filesystem makes no symbolic links (Windows without the privilege)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    source = os.path.abspath(source)
    try:
        os.symlink(source, link)
    except OSError:
        try:
            os.link(source, link)
        except OSError:
            shutil.copy2(source, link)


def _write_fold_tree(images, held_out, folder):
    """`folder`/train/<class>/ and /validation/<class>/: links to the images, the held-out
    fold's under validation/ (train's layout for given splits), swapped in whole."""
    def write(temp):
        for index, path in enumerate(images.split.paths):
            role = "validation" if held_out[index] else "train"
            prefix, inner = images.places[index]
            label = images.class_names[images.split.labels[index]]
            _link(path, temp / role / label / prefix / inner)

    runs.replace_dir(folder, write)


def _train_fold(config, run_dir):
    """The fold's run, finished: trained, resumed where a killed audit left it half-way, or
    left as it is if it had finished."""
    from catsdogs.training.train import resume, train

    if (run_dir / runs.CONFIG_FILE).exists() and runs.read_csv(run_dir / runs.HISTORY_FILE):
        if not (run_dir / runs.METRICS_FILE).exists() or (run_dir / runs.CHECKPOINTS_DIR).exists():
            resume(run_dir)
        return
    shutil.rmtree(run_dir, ignore_errors=True)  # killed before its first epoch: nothing to keep
    train(config)


def _predict_fold(run_dir, images, held_out):
    """Out-of-fold probabilities (held-out images, classes) from the fold's best model."""
    from catsdogs.inference.classifier import load
    from catsdogs.inference.tta import predict_arrays

    classifier = load(run_dir)
    if classifier.class_names != images.class_names:
        raise RunFailed(f"the fold's model has classes {classifier.class_names}, the data "
                        f"{images.class_names}", where=run_dir, fix="remove the audit folder "
                                                                    "and start again")
    return predict_arrays(classifier, images.split.pixels[held_out])


@contextlib.contextmanager
def _quiet_retracing():
    """Without TensorFlow's "triggered tf.function retracing" warnings: each fold compiles a
    new model's functions, which is what that warning counts, so it would blame a loop that is
    the point of an audit."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def _run_fold(fold, images, fold_of, base, folder):
    """Train fold `fold` (0-based) on the other folds, predict it, store oof.npy; returns the
    fold's record (images, accuracy, seconds)."""
    import keras

    started = time.perf_counter()
    fold_dir = folder / f"fold-{fold + 1}"
    held_out = fold_of == fold
    _write_fold_tree(images, held_out, fold_dir / "data")
    config = dataclasses.replace(base, data=str((fold_dir / "data").resolve()),
                                 run_dir=str((fold_dir / "run").resolve()))
    # train's results (best epoch, paths) would read as the audit's: they stay in the run folder
    with contextlib.redirect_stdout(io.StringIO()) as printed, _quiet_retracing():
        _train_fold(config, fold_dir / "run")
        probabilities = _predict_fold(fold_dir / "run", images, held_out)
    log().debug(printed.getvalue().rstrip())
    with runs.atomic_path(fold_dir / "oof.npy") as temp:
        np.save(temp, probabilities)
    shutil.rmtree(fold_dir / "data", ignore_errors=True)
    keras.utils.clear_session()  # each fold builds a new model: free the last one's graphs
    accuracy = float((probabilities.argmax(axis=1) == images.split.labels[held_out]).mean())
    return {"images": int(held_out.sum()), "accuracy": accuracy,
            "seconds": round(time.perf_counter() - started, 1)}


# ---------------------------------------------------------------- the record (folds.json)


def _read_record(folder, settings):
    """folds.json of the audit in `folder`, or None where there is none yet.

    Raises:
        CatsDogsError: it holds an audit whose settings differ from those in `settings` (keys
            it lacks are not compared: the files' fingerprint comes after decoding).
    """
    path = folder / RECORD_FILE
    if not path.is_file():
        return None
    record = cfg.load_json(path)
    stored = record.get("settings", {}) if isinstance(record, dict) else {}
    differ = [f"{key} {stored.get(key)!r} -> {value!r}" if key != "files_sha256"
              else "the files differ"
              for key, value in settings.items() if stored.get(key) != value]
    if differ:
        raise CatsDogsError(f"the folder holds an audit with other settings ({'; '.join(differ)})",
                            where=folder, fix="repeat that audit's command to continue it, or "
                                              "pass another --out-dir")
    return record


def _check_folder(folder):
    """The audit's folder is new, empty, or an audit's: never a folder of other files."""
    if folder.is_dir() and not (folder / RECORD_FILE).is_file() and any(
            p.name != runs.LOCK_FILE for p in folder.iterdir()):
        raise CatsDogsError("folder holds other files, not a label audit", where=folder,
                            fix="pass a new --out-dir")


# ---------------------------------------------------------------- the audit


def audit_labels(config):
    """Train one model per fold, predict every image out of fold, rank likely label errors.

    Args:
        config: an AuditConfig (data folder, folds, preset, epochs, batch size, seed, folder).

    Returns:
        LabelAudit; its folder holds folds.json, label_issues.csv, label_issues.png and each
        fold's oof.npy and run folder.

    Raises:
        CatsDogsError: bad data or settings, the folder in use by another process, or a folder
            holding an audit with other settings or files.

    Example:
        >>> audit = audit_labels(AuditConfig(data="my_photos", folds=5))  # doctest: +SKIP
        >>> audit.issues[0].path, audit.mean_accuracy  # doctest: +SKIP
    """
    from catsdogs.models.presets import get_preset
    from catsdogs.training.train import resolve_config

    if config.data is None:
        raise CatsDogsError("no data folder given", fix="pass the folder to audit")
    base = resolve_config(cfg.TrainConfig(data=config.data, preset=config.preset,
                                          epochs=config.epochs, batch_size=config.batch_size,
                                          seed=config.seed, selection_split=SELECTION_SPLIT))
    # everything a user can fix is found before a file is decoded or written
    scanned = scan_audit_images(config.data, config.folds)
    folder = config.folder
    _check_folder(folder)
    settings = {"folds": config.folds, "preset": base.preset, "epochs": base.epochs,
                "batch_size": base.batch_size, "seed": config.seed,
                "selection_split": SELECTION_SPLIT}
    _read_record(folder, settings)
    with runs.run_folder_lock(folder):
        runs.remove_stale_temporaries(folder)
        images = decode_audit_images(scanned, config.data, get_preset(base.preset).image_size,
                                     config.folds)
        settings.update(images=len(images.split), files_sha256=_fingerprint(images))
        record = _read_record(folder, settings) or {
            "data": str(Path(config.data).resolve()), "settings": settings, "folds": {}}
        runs.write_json(folder / RECORD_FILE, record)
        fold_of = stratified_folds(images.split.labels, config.folds, config.seed)
        probabilities = np.zeros((len(images.split), len(images.class_names)))
        for fold in range(config.folds):
            name = f"Fold {fold + 1}/{config.folds}"
            stored = record["folds"].get(str(fold + 1))
            oof = folder / f"fold-{fold + 1}" / "oof.npy"
            if stored is not None and oof.is_file():
                log().info(f"{name}: finished before (accuracy {stored['accuracy']:.4f}), skipped")
            else:
                stored = _run_fold(fold, images, fold_of, base, folder)
                record["folds"][str(fold + 1)] = stored
                runs.write_json(folder / RECORD_FILE, record)
                log().info(f"{name}: accuracy {stored['accuracy']:.4f} on {stored['images']} "
                           f"held-out images, {stored['seconds']:.0f} s")
            probabilities[fold_of == fold] = np.load(oof)
        accuracies = [record["folds"][str(k + 1)]["accuracy"] for k in range(config.folds)]
        audit = LabelAudit(folder, images, fold_of, probabilities, accuracies,
                           find_issues(images, probabilities))
        _write_results(audit, record)
    return audit


def find_issues(images, probabilities):
    """Likely label errors, most suspect first: cleanlab's `find_label_issues` (confident
    learning, pruned by the estimated noise rates) on out-of-fold probabilities, ranked by
    self-confidence."""
    from cleanlab.filter import find_label_issues

    labels = images.split.labels
    # n_jobs=1: cleanlab's worker processes would fork a process that holds TensorFlow
    ranked = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence",
                               n_jobs=1)
    names = images.class_names
    return [LabelIssue(rank, images.split.paths[i], names[labels[i]],
                       names[int(probabilities[i].argmax())], float(probabilities[i, labels[i]]))
            for rank, i in enumerate(ranked, start=1)]


def _write_results(audit, record):
    """label_issues.csv, label_issues.png and the k-fold summary in folds.json."""
    from catsdogs import plots

    runs.write_csv(audit.folder / ISSUES_FILE, ISSUES_HEADER, [i.row() for i in audit.issues])
    record["accuracy"] = {"mean": audit.mean_accuracy, "std": audit.std_accuracy,
                          "std_is": "sample standard deviation across folds (ddof=1)",
                          "per_fold": audit.fold_accuracies}
    record["label_issues"] = len(audit.issues)
    runs.write_json(audit.folder / RECORD_FILE, record)
    shown = audit.issues[:GALLERY_SIZE]
    if shown:
        index = {path: i for i, path in enumerate(audit.images.split.paths)}
        plots.image_grid(audit.images.split.pixels[[index[i.path] for i in shown]],
                         [f"#{i.rank} {i.given} -> {i.suggested}\n(p={i.self_confidence:.2f})"
                          for i in shown], audit.folder / GALLERY_FILE,
                         title="Likely label errors, most suspect first: given -> suggested "
                               "(out-of-fold probability of the given label)")
    else:
        (audit.folder / GALLERY_FILE).unlink(missing_ok=True)  # a previous run's suspects


def summary_lines(audit):
    """The printed summary: k-fold accuracy, then the first suspects (all in the CSV)."""
    per_fold = ", ".join(f"{a:.4f}" for a in audit.fold_accuracies)
    lines = [f"k-fold accuracy ({len(audit.fold_accuracies)} folds, {len(audit.images.split)} "
             f"images): {audit.mean_accuracy:.4f} ± {audit.std_accuracy:.4f}  (per fold: "
             f"{per_fold})"]
    if audit.issues:
        lines.append(f"{len(audit.issues)} likely label errors (cleanlab, out-of-fold), most "
                     "suspect first:")
        lines += name_some([f"{display(i.path)}: labelled {i.given}, looks like {i.suggested} "
                            f"(p({i.given}) = {i.self_confidence:.3f})" for i in audit.issues],
                           limit=SUMMARY_NAMED, indent="  ")
        lines.append(f"All of them: {audit.folder / ISSUES_FILE}; pictures: "
                     f"{audit.folder / GALLERY_FILE}")
    else:
        lines.append("No likely label errors found.")
    lines.append(f"Folds: {audit.folder / RECORD_FILE}")
    return lines


# ---------------------------------------------------------------- a cleaned copy


def check_copy_target(target):
    """A cleaned copy goes into a new or empty folder (checked before hours of training)."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CatsDogsError("target folder is not empty", where=target, fix="choose a new folder")


def write_fixed_copy(audit, target, relabel=False):
    """Copy the audited images into `target` in the data folder's layout, without the suspects,
    or with each suspect in its suggested class folder (`relabel`). The data is only read.

    Returns:
        (files copied, suspects left out or relabelled)
    """
    check_copy_target(target)
    images = audit.images
    suspects = {issue.path: issue for issue in audit.issues}

    def write(temp):
        held_back = []
        for path, label, (prefix, inner) in zip(images.split.paths, images.split.labels,
                                                images.places):
            if path in suspects:
                held_back.append((path, prefix, inner))
            else:
                _copy(path, temp / prefix / images.class_names[label] / inner)
        for path, prefix, inner in held_back if relabel else ():  # after the others: names clash
            issue = suspects[path]
            destination = temp / prefix / issue.suggested / inner
            if destination.exists():  # the class folder has a file of that name already
                destination = destination.with_name(
                    f"{destination.stem}-from-{issue.given}{destination.suffix}")
            _copy(path, destination)

    runs.replace_dir(target, write)
    copied = len(images.split) - (0 if relabel else len(suspects))
    return copied, len(suspects)


def _copy(source, destination):
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, destination)
