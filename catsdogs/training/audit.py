"""Find the mislabeled photos: cleanlab's ranking of likely label errors on out-of-fold
predictions (the library of `catsdogs doctor DATA --label-issues`).

A model that trained on an image with a wrong label has learnt to agree with that label, so here
every image is judged by a model that never saw it: k-fold cross-validation (kfold.py) of a
quick preset. From these out-of-fold probabilities cleanlab's confident learning (Northcutt,
Jiang and Chuang 2021) estimates how often each class is labelled as each other one and flags
the images whose given label is least believable, most suspect first (lowest self-confidence:
the probability the model gives the given label). The same held-out predictions give the
k-fold accuracy: each fold's, their mean and standard deviation.

The output folder (default `runs/label-audit-<data folder name>/`, no time in the name, so a
second run finds it and resumes) is a
k-fold folder (folds.json, fold-<k>/: see kfold.py; resumable by fold) plus:

    label_issues.csv  rank, path, given label, suggested label, self-confidence
    label_issues.png  the top suspects, each with its given and suggested label
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.config import setting
from catsdogs.console import display, name_some
from catsdogs.data.doctor import check_copy_target, copy_file
from catsdogs.errors import CatsDogsError
from catsdogs.training.kfold import RECORD_FILE, CrossValidation, cross_validate

DEFAULT_PRESET = "fast-catsdogs"  # k models to train: the quickest preset that reads photos well
NEAR_CHANCE = 0.1  # out-of-fold accuracy within this of the majority share: suspects mean little
GALLERY_SIZE = 32  # suspects shown in label_issues.png
SUMMARY_NAMED = 10  # suspects named in the printed summary
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
    # where the decoded photos live: decoded once for every fold with disk (kfold.py)
    cache: str = cfg.same_setting(cfg.TrainConfig, "cache")
    cache_dir: str | None = cfg.same_setting(cfg.TrainConfig, "cache_dir")
    out_dir: str | None = setting(None, "(folder) the audit's folder, kept to resume it; "
                                        "default: runs/label-audit-<data folder name>")

    def __post_init__(self):
        cfg.check_choices(self)
        for name, value, least in (("folds", self.folds, 2), ("epochs", self.epochs, 1),
                                   ("batch_size", self.batch_size, 1)):
            if value is not None and (not isinstance(value, int) or value < least):
                raise CatsDogsError(f"bad value for --{cfg.flag_name(name)}: expected an "
                                    f"integer >= {least}, received {value!r}")

    @property
    def folder(self):
        """Where the audit is kept."""
        if self.out_dir:
            return Path(self.out_dir)
        return Path(runs.RUNS_ROOT) / f"label-audit-{Path(self.data).resolve().name}"


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
class LabelAudit(CrossValidation):
    """A finished audit: the folds (out-of-fold probabilities, k-fold accuracy) and the
    suspects."""

    issues: list[LabelIssue] = dataclasses.field(default_factory=list)


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
    from catsdogs.training.train import resolve_config

    if config.data is None:
        raise CatsDogsError("no data folder given", fix="pass the folder to audit")
    base = resolve_config(cfg.TrainConfig(data=config.data, preset=config.preset,
                                          epochs=config.epochs, batch_size=config.batch_size,
                                          seed=config.seed, cache=config.cache,
                                          cache_dir=config.cache_dir))
    folds = cross_validate(base, config.data, config.folds, config.folder)
    audit = LabelAudit(**{field.name: getattr(folds, field.name)
                          for field in dataclasses.fields(CrossValidation)},
                       issues=find_issues(folds.images, folds.probabilities))
    _write_results(audit)
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


def _write_results(audit):
    """label_issues.csv, label_issues.png and the suspects' count in folds.json."""
    from catsdogs import plots

    runs.write_csv(audit.folder / ISSUES_FILE, ISSUES_HEADER, [i.row() for i in audit.issues])
    audit.record["label_issues"] = len(audit.issues)
    runs.write_json(audit.folder / RECORD_FILE, audit.record)
    shown = audit.issues[:GALLERY_SIZE]
    if shown:
        index = {path: i for i, path in enumerate(audit.images.split.paths)}
        plots.image_grid(audit.images.split.gather([index[i.path] for i in shown]),
                         [f"#{i.rank} {i.given} -> {i.suggested}\n(p={i.self_confidence:.2f})"
                          for i in shown], audit.folder / GALLERY_FILE,
                         title="Likely label errors, most suspect first: given -> suggested "
                               "(out-of-fold probability of the given label)")
    else:
        (audit.folder / GALLERY_FILE).unlink(missing_ok=True)  # a previous run's suspects


def majority_share(audit):
    """The accuracy of always answering the largest class: what "chance" means here."""
    labels = np.asarray(audit.images.split.labels)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def summary_lines(audit):
    """The printed summary: k-fold accuracy, then the first suspects (all in the CSV)."""
    lines = [audit.summary_line()]
    if audit.issues:
        chance = majority_share(audit)
        if audit.mean_accuracy < chance + NEAR_CHANCE:
            lines.append(f"Warning: the out-of-fold models score near chance "
                         f"({audit.mean_accuracy:.2f} against {chance:.2f} for always the largest "
                         "class), so their suspects mean little: give them more --epochs or a "
                         "stronger --preset")
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


def write_fixed_copy(audit, data_dir, target, relabel=False):
    """Copy the audited images of `data_dir` into `target` in its layout, without the suspects,
    or with each suspect in its suggested class folder (`relabel`). The data is only read.

    Returns:
        (files copied, suspects left out or relabelled)
    """
    check_copy_target(target, data_dir)
    images = audit.images
    suspects = {issue.path: issue for issue in audit.issues}

    def write(temp):
        held_back = []
        for path, label, (prefix, inner) in zip(images.split.paths, images.split.labels,
                                                images.places):
            if path in suspects:
                held_back.append((path, prefix, inner))
            else:
                copy_file(path, temp / prefix / images.class_names[label] / inner)
        for path, prefix, inner in held_back if relabel else ():  # after the others: names clash
            issue = suspects[path]
            destination = temp / prefix / issue.suggested / inner
            if destination.exists():  # the class folder has a file of that name already
                runs.copy_new(path, destination.parent,
                              f"{destination.stem}-from-{issue.given}{destination.suffix}")
            else:
                copy_file(path, destination)

    runs.replace_dir(target, write)
    copied = len(images.split) - (0 if relabel else len(suspects))
    return copied, len(suspects)


def suspects_outside_training(audit):
    """How many suspects lie in a split folder other than train/ (validation/, test/): the
    models' judgement cleans photos that later measure a model, whose figures then read high
    (the photos the models found hard are gone or relabelled)."""
    from catsdogs.data.datasets import TRAIN_NAMES

    places = dict(zip(audit.images.split.paths, audit.images.places))
    return sum(places[issue.path][0] not in (".", *TRAIN_NAMES) for issue in audit.issues)


