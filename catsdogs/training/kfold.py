"""k-fold cross-validation: every image predicted by a model that never saw it (the library of
`catsdogs train --folds K` and of the label audit, `doctor --label-issues`).

The images are dealt into K stratified, seeded folds; for each fold, `catsdogs.train` trains the
settings given on the other K-1 folds (a share of them choosing the best epoch, so the held-out
fold decides nothing: the selection protocol) and that model predicts the held-out fold. Those
out-of-fold probabilities give each fold's accuracy, their mean and standard deviation, and
are what the label audit ranks (audit.py).

The folder (train: --run-dir; the audit: --out-dir):

    folds.json        settings, each finished fold (images, accuracy, seconds), k-fold summary
    fold-<k>/oof.npy  the held-out images' probabilities (rows: the fold's images in path order)
    fold-<k>/run/     the fold's run folder (config.json, model.keras, history.csv, metrics.json)

Resumable: a fold trains on a tree of links to the original files (train/: the other folds,
validation/: the held-out one), so each fold is an ordinary run folder that `catsdogs.train`
starts and `catsdogs.resume` continues. Killed at any point and started again with the same
command, it skips the finished folds and resumes the one it was in; other settings, or
changed files, are refused. The data folder is only ever read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.console import display, log, name_some, quiet_retracing
from catsdogs.data.cache import Storage
from catsdogs.data.datasets import Split, decode_split, scan_class_folders
from catsdogs.errors import CatsDogsError, RunFailed

# Each fold's share of its training images that chooses the best epoch, unless the settings
# give one: the held-out fold then only measures, and its accuracy is not read high by the choice.
MIN_EXTRA_PER_CLASS = 2  # beyond one per fold: a class needs one to train and one to choose on
RECORD_FILE = "folds.json"
# settings that say where, not how: a fold's own data tree and run folder replace them
PLACE_SETTINGS = ("data", "train_dir", "val_dir", "run_dir", "dataset", "val_split")
# where the decoded photos are kept, not how a fold trains: not compared when continuing
CACHE_SETTINGS = ("cache", "cache_dir", "cache_source")


@dataclasses.dataclass
class FoldImages:
    """The images of the folds: decoded once, for the held-out predictions (and the audit's
    gallery)."""

    class_names: list[str]
    split: Split  # at the preset's size (in memory or read by rows): labels, paths, SHA-256s
    places: list[tuple[str, str]]  # (split folder inside the data folder or ".", path inside
    #                                 its class folder): where a copy puts each image




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


def scan_images(data_dir, folds):
    """The image files below `data_dir` with their classes, checked for `folds`; nothing is
    opened, so a wrong folder or a small class is one line at once.

    Raises:
        CatsDogsError: no class folders, or a class with too few images for `folds`.
    """
    scanned = _scan(data_dir)
    class_names, _, labels, _ = scanned
    _check_class_counts(labels, class_names, folds, data_dir)
    return scanned


def decode_images(scanned, data_dir, image_size, folds, storage=None):
    """The scanned images decoded once at `image_size`, where `storage` (data.cache.Storage,
    settled) keeps them (default: in memory); unreadable files left out (and the class counts
    checked again without them). With a disk cache this fills the cache of `data_dir`, which
    every fold then reads through (Storage.source): no fold decodes anything where symlinks
    work; hard links and copies (_link's fallback) decode once more, in each fold."""
    class_names, paths, labels, places = scanned
    split, unreadable = decode_split(paths, labels, image_size, data_dir, storage,
                                     f"images from {display(data_dir)}")
    left_out = {path for path, _ in unreadable}
    kept = [index for index, path in enumerate(paths) if path not in left_out]
    if unreadable:
        log().warning("\n".join([f"Left out {len(unreadable)} unreadable file(s) (python -m "
                                 f"catsdogs.doctor lists them all)"] + name_some(
            [f"{display(path)}: {reason}" for path, reason in unreadable])))
    _check_class_counts(split.labels, class_names, folds, data_dir)
    return FoldImages(class_names, split, [places[i] for i in kept])


def _fingerprint(images):
    """SHA-256 over every file's place, label and content: a restarted cross-validation must see
    the same files, or its finished folds predicted other images."""
    digest = hashlib.sha256()
    for (prefix, inner), label, content in zip(images.places, images.split.labels,
                                               images.split.digests):
        digest.update(f"{prefix}/{inner}\t{images.class_names[label]}\t{content}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- one fold


def _link(source, link):
    """A symbolic link at `link` to `source`; a hard link, or at last a copy, where the
    filesystem makes no symbolic links (Windows without the privilege). The disk cache knows a
    photo by its real path, which only a symbolic link leads back to: a fold's hard links and
    copies are decoded again."""
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


def _predict_fold(run_dir, images, held_out):
    """Out-of-fold probabilities (held-out images, classes) from the fold's best model."""
    from catsdogs.inference.classifier import load
    from catsdogs.inference.tta import predict_arrays

    classifier = load(run_dir)
    if classifier.class_names != images.class_names:
        raise RunFailed(f"the fold's model has classes {classifier.class_names}, the data "
                        f"{images.class_names}", where=run_dir, fix="remove the folds' folder "
                                                                    "and start again")
    return predict_arrays(classifier, images.split.subset(np.flatnonzero(held_out)).pixel_view())


def _run_fold(fold, images, fold_of, base, folder):
    """Train fold `fold` (0-based) on the other folds, predict it, store oof.npy; returns the
    fold's record (images, accuracy, seconds)."""
    import keras

    from catsdogs.training.train import finish_run

    started = time.perf_counter()
    fold_dir = folder / f"fold-{fold + 1}"
    held_out = fold_of == fold
    _write_fold_tree(images, held_out, fold_dir / "data")
    config = dataclasses.replace(base, data=str((fold_dir / "data").resolve()),
                                 run_dir=str((fold_dir / "run").resolve()))
    # train's results (best epoch, paths) would read as the k folds': they stay in the run folder
    with contextlib.redirect_stdout(io.StringIO()) as printed, quiet_retracing():
        finish_run(config)
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
    """folds.json in `folder`, or None where there is none yet.

    Raises:
        CatsDogsError: it holds folds whose settings differ from those in `settings` (keys
            `settings` lacks are not compared: the files' fingerprint comes after decoding).
    """
    path = folder / RECORD_FILE
    if not path.is_file():
        return None
    record = cfg.load_json(path)
    stored = record.get("settings", {}) if isinstance(record, dict) else {}
    # a record of an older catsdogs lacks the settings added since: it ran them as runs of
    # that time did (config.SETTINGS_ADDED_LATER); what else it lacks it did not store
    stored = {**{key: value for key, value in cfg.SETTINGS_ADDED_LATER.items()
                 if key in settings}, **stored}
    # folders and files stored relative by an older catsdogs: continued from the same folder
    stored = {key: cfg.absolute_setting(key, value) for key, value in stored.items()}
    differ = [f"{key} {stored[key]!r} -> {value!r}" if key != "files_sha256"
              else "the files differ"
              for key, value in settings.items() if key in stored and stored[key] != value]
    if differ:
        # a setting added since, whose new default differs, needs its flag to be repeated
        flags = [_as_flag(key, stored[key]) for key, value in settings.items()
                 if key in stored and stored[key] != value and key != "files_sha256"]
        raise CatsDogsError(f"the folder holds folds of other settings ({'; '.join(differ)})",
                            where=folder, fix=f"repeat that command to continue it"
                                              f"{' (' + ' '.join(flags) + ')' if flags else ''}, "
                                              "or pass another folder")
    return record


def _as_flag(key, value):
    """The command-line form of one setting's value (`--no-x` for False)."""
    flag = cfg.flag_name(key)
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    if isinstance(value, (list, tuple)):
        return f"--{flag} {' '.join(map(str, value))}"
    if value is None:  # the preset's own (no flag given)
        return f"without --{flag}"
    return f"--{flag} {value}"


def _check_folder(folder):
    """The folder is new, empty, or a k-fold one: never a folder of other files."""
    if folder.is_dir() and not (folder / RECORD_FILE).is_file() and any(
            p.name != runs.LOCK_FILE for p in folder.iterdir()):
        raise CatsDogsError("folder holds other files, not k folds", where=folder,
                            fix="pass a new folder")


@dataclasses.dataclass
class CrossValidation:
    """Finished folds: out-of-fold probabilities for every image and each fold's accuracy."""

    folder: Path
    images: FoldImages
    fold_of: np.ndarray  # (n,) the fold (0-based) that held out each image
    probabilities: np.ndarray  # (n, classes) out-of-fold
    fold_accuracies: list[float]
    record: dict  # folds.json as written

    @property
    def mean_accuracy(self):
        return float(np.mean(self.fold_accuracies))

    @property
    def std_accuracy(self):
        """The sample standard deviation across folds (ddof=1): the spread of one fold's
        accuracy, not the error of the mean."""
        return float(np.std(self.fold_accuracies, ddof=1))

    def summary_line(self):
        per_fold = ", ".join(f"{a:.4f}" for a in self.fold_accuracies)
        return (f"k-fold accuracy ({len(self.fold_accuracies)} folds, {len(self.images.split)} "
                f"images): {self.mean_accuracy:.4f} ± {self.std_accuracy:.4f}  (per fold: "
                f"{per_fold})")


def fold_settings(base):
    """The settings a fold trains with, as stored in folds.json: `base` without where its data
    and run folder are, with a selection split (cfg.SELECTION_SPLIT where it gives none), flat."""
    settings = {}
    for key, value in cfg.to_dict(base).items():
        if isinstance(value, dict):  # augment: one key per setting, so a change names it
            settings.update({f"{key}.{inner}": item for inner, item in value.items()})
        elif key not in PLACE_SETTINGS + CACHE_SETTINGS:
            settings[key] = value
    settings["selection_split"] = base.selection_split or cfg.SELECTION_SPLIT
    return json.loads(json.dumps(settings))  # as folds.json reads back: lists, not tuples


def cross_validate(base, data, folds, folder, continue_with=None):
    """Train `folds` models on `data`, each on the other folds, and predict the held-out one.

    Args:
        base: a resolved TrainConfig: how every fold trains (its data and run folder are
            replaced by the fold's; with no selection split, cfg.SELECTION_SPLIT).
        data: class sub-folders, or train/ and validation/ of them (pooled).
        folds: K >= 2.
        folder: where folds.json and the folds go; a killed run continues there.
        continue_with: the command that continues a killed run, for the log (default: "the
            same command").

    Returns:
        CrossValidation (folds.json then holds the k-fold summary).

    Raises:
        CatsDogsError: bad data, the folder in use by another process, or a folder holding
            folds of other settings or files.
    """
    from catsdogs.models.presets import preset_of
    from catsdogs.training.train import check_image_size

    settings = {"folds": folds, **fold_settings(base)}
    # everything a user can fix is found before a file is decoded or written
    scanned = scan_images(data, folds)
    folder = Path(folder)
    _check_folder(folder)
    _read_record(folder, settings)
    check_image_size(base)
    log().info(f"{folds} folds into {display(folder)} (killed, {continue_with or 'the same command'} "
               f"continues there)")
    with runs.run_folder_lock(folder):
        runs.remove_stale_temporaries(folder)
        image_size = preset_of(base).image_size
        storage = Storage.of(base)
        storage.decide(len(scanned[1]), image_size)  # once, for every fold
        images = decode_images(scanned, data, image_size, folds, storage)
        # each fold reads its tree of links to `data` through the cache of `data`
        fold_base = dataclasses.replace(
            base, selection_split=settings["selection_split"], dataset="folder",
            train_dir=None, val_dir=None, cache=storage.mode,
            cache_source=str(Path(data).resolve()) if storage.mode == "disk" else None)
        settings.update(images=len(images.split), files_sha256=_fingerprint(images))
        record = _read_record(folder, settings) or {
            "data": str(Path(data).resolve()), "settings": settings, "folds": {}}
        runs.write_json(folder / RECORD_FILE, record)
        fold_of = stratified_folds(images.split.labels, folds, base.roles_seed)
        probabilities = np.zeros((len(images.split), len(images.class_names)))
        for fold in range(folds):
            name = f"Fold {fold + 1}/{folds}"
            stored = record["folds"].get(str(fold + 1))
            oof = folder / f"fold-{fold + 1}" / "oof.npy"
            if stored is not None and oof.is_file():
                log().info(f"{name}: finished before (accuracy {stored['accuracy']:.4f}), skipped")
            else:
                stored = _run_fold(fold, images, fold_of, fold_base, folder)
                record["folds"][str(fold + 1)] = stored
                runs.write_json(folder / RECORD_FILE, record)
                log().info(f"{name}: accuracy {stored['accuracy']:.4f} on {stored['images']} "
                           f"held-out images, {stored['seconds']:.0f} s")
            probabilities[fold_of == fold] = np.load(oof)
        accuracies = [record["folds"][str(k + 1)]["accuracy"] for k in range(folds)]
        result = CrossValidation(folder, images, fold_of, probabilities, accuracies, record)
        record["accuracy"] = {"mean": result.mean_accuracy, "std": result.std_accuracy,
                              "std_is": "sample standard deviation across folds (ddof=1)",
                              "per_fold": accuracies}
        runs.write_json(folder / RECORD_FILE, record)
    return result
