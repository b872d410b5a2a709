"""Settings as frozen dataclasses, and the one mapping between them, JSON files and CLI flags.

Each field's `metadata["help"]` is its comment, its `--help` text and its unit at once, so the
three never drift apart (timm's flags and Ultralytics' default.yaml keep them in two places).
Precedence: field defaults <- preset defaults <- `--config FILE.json` <- command-line flags.
"""

import argparse
import dataclasses
import difflib
import json
import math
import os
import types
import typing
from pathlib import Path

from catsdogs.errors import CatsDogsError

DATASETS = ("folder", "cifar10")  # where images come from: class folders, or CIFAR-10
SCHEDULES = ("constant", "cosine", "triangular", "linear")  # learning rate over training (optim.py)
OPTIMIZERS = ("adam", "sgd", "muon")  # sgd: airbench's Nesterov SGD; muon: + Muon (optim.py)
SEARCHES = ("hyperband", "bayesian", "random")  # KerasTuner's oracles, for `catsdogs tune`
NAMED_WEIGHTS = ("none", "imagenet")  # --weights that name a start; any other is a file or run
# settings that name a file or folder: stored absolute in config.json (absolute_setting)
PATH_SETTINGS = ("data", "train_dir", "val_dir", "cache_dir", "teacher", "prune_from",
                 "weights")
UNFREEZE_ALL = "all"  # --unfreeze: every layer of the body, else the last K layers with weights
STRATEGIES = ("auto", "default", "mirrored", "multiworker")  # see distribute.py
KEEP = ("best", "last")  # which epoch's model a run keeps (train.py)
CLASS_WEIGHTS = ("none", "auto")  # auto: each class weighted by total / (classes x its count)
CACHES = ("auto", "ram", "disk", "none")  # where decoded pixels live while training (data/cache.py)


def setting(default, help, choices=None, nargs=None, search=None, internal=False):
    """A dataclass field whose help text doubles as its `--flag` help.

    Args:
        choices: the allowed values (None is always allowed: "not given"); `check_choices`
            enforces them with a close-match hint, and the help names them.
        nargs: how many values the flag takes, for tuple fields (argparse's nargs; default 2).
        search: the range `catsdogs tune` searches, declared here beside the setting
            (training/space.py): ("log" | "linear" | "int", LO, HI), ("choice", V1, V2, ...),
            ("scale", LO, HI): the preset's value times a factor in [LO, HI] (log-uniform),
            or ("scales", F1, F2, ...): a choice among the preset's value times each factor.
        internal: set by catsdogs itself for a run it starts (a k-fold fold, a refit), never
            by a user: kept in config.json (and settings files), but no flag.
    """
    if isinstance(default, (list, dict)):
        raise TypeError("mutable defaults are not allowed; use a tuple")
    if choices is not None:
        help = f"(one of {', '.join(choices)}) {help}"
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices,
                                                        "nargs": nargs, "search": search,
                                                        "internal": internal})


def same_setting(cls, name):
    """A field declared as `cls`'s field `name` is (default, help, choices): for settings that
    another command passes on to `cls` (the label audit's --cache, as train's)."""
    field = cls.__dataclass_fields__[name]
    return dataclasses.field(default=field.default, metadata=dict(field.metadata))


def check_choices(config):
    """Every field of `config` declared with `choices` holds one of them (or None)."""
    for field in dataclasses.fields(config):
        choices, value = field.metadata.get("choices"), getattr(config, field.name)
        if choices is not None and value is not None:
            _check(value in choices, field.name, value, f"one of {', '.join(choices)}",
                   _close_match(value, choices))


# the share of each class's training images k-fold and tune carve to choose on, where the
# settings give no --selection-split (both always choose on held-out photos)
SELECTION_SPLIT = 0.15


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Random training-time transforms with ImageDataGenerator's arguments and units."""

    rotation_range: float = setting(0.0, "(degrees) rotate by U(-r, r)",
                                    search=("linear", 0.0, 30.0))
    width_shift_range: int | float = setting(
        0.0, "(fraction of width) shift by U(-w, w) * width; w >= 1: pixels; an integer: "
             "whole pixels, -(w-1)..w-1 (no resampling blur), as in ImageDataGenerator",
             search=("linear", 0.0, 0.2))
    height_shift_range: int | float = setting(
        0.0, "(fraction of height) shift by U(-h, h) * height; >= 1 and integers as above",
        search=("linear", 0.0, 0.2))
    shear_range: float = setting(0.0, "(degrees) shear angle U(-s, s), counter-clockwise",
                                 search=("linear", 0.0, 20.0))
    zoom_range: tuple[float, float] = setting(
        (1.0, 1.0), "(scale) Z or LO HI; Z means [1-Z, 1+Z]; >1 zooms out, as in ImageDataGenerator",
        nargs="+",
        search=("linear", 0.0, 0.3))
    horizontal_flip: bool = setting(False, "(bool) flip left-right with probability 1/2",
                                    search=("choice", False, True))
    vertical_flip: bool = setting(False, "(bool) flip upside down with probability 1/2")
    alternate_flips: bool = setting(
        False, "(bool) with --horizontal-flip: a coin flips each image in the first epoch, then "
               "every image is mirrored in every other epoch (airbench's derandomised flip: "
               "no image is seen the same way round two epochs running)")
    brightness_range: tuple[float, float] | None = setting(
        None, "(factor) LO HI: multiply pixels by U(LO, HI), as PIL's ImageEnhance.Brightness; "
              "1 1: off")

    def __post_init__(self):
        zoom = tuple(float(z) for z in _as_tuple(self.zoom_range))
        if len(zoom) == 1:  # ImageDataGenerator: a float z means [1 - z, 1 + z]
            zoom = (1.0 - zoom[0], 1.0 + zoom[0])
        object.__setattr__(self, "zoom_range", zoom)
        if self.brightness_range is not None:
            object.__setattr__(self, "brightness_range", tuple(float(b) for b in self.brightness_range))
        _check(self.rotation_range >= 0, "rotation_range", self.rotation_range, "a number of degrees >= 0")
        _check(0 <= self.shear_range < 90, "shear_range", self.shear_range, "degrees in [0, 90)")
        for name in ("width_shift_range", "height_shift_range"):
            _check(getattr(self, name) >= 0, name, getattr(self, name),
                   "a fraction in [0, 1), or pixels >= 1 (an integer for whole pixels)")
        _check(len(zoom) == 2 and 0 < zoom[0] <= zoom[1], "zoom_range", self.zoom_range,
               "Z in [0, 1) or LO HI with 0 < LO <= HI")
        if self.alternate_flips and not self.horizontal_flip:
            raise CatsDogsError("--alternate-flips needs --horizontal-flip",
                                fix="add --horizontal-flip, or drop --alternate-flips")
        if self.brightness_range is not None:
            lo_hi = self.brightness_range
            _check(len(lo_hi) == 2 and 0 <= lo_hi[0] <= lo_hi[1], "brightness_range", lo_hi,
                   "LO HI with 0 <= LO <= HI (1 1 leaves images unchanged)")

    @property
    def is_identity(self):
        """True when no transform would change an image (so the pipeline can skip the layers)."""
        return self == AugmentConfig()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything `python -m catsdogs.train` needs; saved as the run folder's config.json."""

    preset: str | None = setting(None, "(name) model preset, see catsdogs train --list-presets; default: by dataset")
    dataset: str = setting("folder", "class folders, or CIFAR-10", choices=DATASETS)
    data: str | None = setting(
        None, "(folder) class sub-folders, or train/ (or training/) + validation/ (or val/, "
              "valid/, test/) inside; "
              "default: data/cats_and_dogs for folder, Keras' download for cifar10")
    train_dir: str | None = setting(None, "(folder) training class sub-folders (with --val-dir)")
    val_dir: str | None = setting(None, "(folder) validation class sub-folders (with --train-dir)")
    val_split: float = setting(0.2, "(fraction) held out for validation when --data has no split")
    cache: str = setting(
        "auto", "where the decoded pixels live: ram: in memory, decoded every run; disk: "
                "decoded once into a cache folder (per folder and image size) that later runs "
                "reuse, decoding only added or changed files, and trained from batch by batch "
                "(memory stays flat whatever the number of images); none: nowhere, each "
                "epoch's batches decoded again (every file checked once first), for folders too "
                "big even for the disk; auto: ram when the decoded images fit comfortably in "
                "the available memory, else disk (never none)", choices=CACHES)
    cache_dir: str | None = setting(
        None, "(folder) where --cache disk keeps its caches; default: $CATSDOGS_CACHE, else "
              "$XDG_CACHE_HOME/catsdogs or ~/.cache/catsdogs (catsdogs cache list | clear)")
    cache_source: str | None = setting(
        None, "(folder, set by --folds for each fold's run) read the images through this "
              "folder's disk cache: each fold's folders link to its photos, so the folds share "
              "one cache", internal=True)
    selection_split: float = setting(
        0.0, "(fraction) carve this share of each class's training images (by --split-seed, "
             "default --seed) to choose "
             "the best epoch on; the validation split is then a test split, evaluated once at "
             "the end (metrics.json: test_accuracy); 0: the validation split chooses")
    keep_epoch: str | None = setting(
        None, "which epoch's model the run keeps: best: the highest accuracy on the validation "
              "(or selection) split, chosen on it; last: the final epoch, where an annealed "
              "schedule ends (nothing is chosen on held-out photos); default: last where the "
              "learning rate anneals (cosine, triangular, linear), best where it is constant",
        choices=KEEP)
    calibration_split: float = setting(
        0.5, "(fraction) when held-out photos choose the epoch (--keep-epoch best, --patience): "
             "this share of them, per class, is set aside to fit the temperature instead, so "
             "the temperature is never fitted on photos that chose the model; with --keep-epoch last "
             "the temperature is fitted on all of them; 0: none set aside, the temperature stays 1")
    calibration_minimum: int | None = setting(
        None, "(photos, set when a run starts) a --calibration-split share of fewer photos "
              "sets none aside (a temperature is not fitted on fewer than 100); runs started "
              "before the rule hold 0: theirs is always set aside", internal=True)
    epochs: int | None = setting(None, "(count) passes over the training set; default: the preset's",
                                 search=("scale", 0.5, 2.0))
    batch_size: int | None = setting(None, "(images) per training step; default: the preset's",
                                     search=("scale", 0.5, 2.0))
    optimizer: str | None = setting(None, "adam: Adam (AdamW with weight decay); sgd: airbench's "
                                          "SGD, Nesterov momentum 0.85, biases of BatchNorm layers "
                                          "without a scale at 64x the rate; muon: that SGD, but "
                                          "convolution kernels take airbench's Muon steps "
                                          "(orthogonalised momentum, normalised kernels); default: "
                                          "the preset's", choices=OPTIMIZERS)
    learning_rate: float | None = setting(None, "(float) the optimizer's (peak) learning rate; default: "
                                         "the preset's",
                                         search=("scale", 0.25, 4.0))
    schedule: str | None = setting(None, "learning rate over time; cosine: linear warm-up for "
                                         "1/10 of the steps, then cosine decay; triangular: "
                                         "linear from 0.2x up to the peak at 0.23 of the steps, "
                                         "then down to 0.07x (airbench's); linear: from the peak "
                                         "straight down to 0", choices=SCHEDULES)
    label_smoothing: float | None = setting(None, "(fraction) soften one-hot targets; 0: off",
                                            search=("linear", 0.0, 0.2))
    weight_decay: float | None = setting(None, "(float) decoupled weight decay: each step shrinks "
                                        "weights by it x the learning rate (AdamW with adam); 0: off",
                                        search=("log", 1e-5, 1e-2))
    lookahead: bool | None = setting(None, "every 5 steps move the weights (and BatchNorm statistics) to "
                                    "a running average of themselves, weighted up to 0.95^5 by "
                                    "the end; each epoch ends on the average (airbench's "
                                    "lookahead); default: the preset's")
    # regularisers and weight averaging: Keras' own layers and optimizer EMA
    mixup: float = setting(0.0, "(alpha) Keras' MixUp on every training batch: images and "
                                "labels blended with a shuffled copy, weights from Beta(alpha, "
                                "alpha), e.g. 0.2; 0: off",
                                search=("choice", 0.0, 0.2, 0.4))
    cutmix: float = setting(0.0, "(alpha) Keras' CutMix on every training batch: a box of a "
                                 "shuffled copy pasted in, labels mixed by its area, e.g. 1; with "
                                 "--mixup each batch takes one of the two; 0: off",
                                 search=("choice", 0.0, 1.0))
    rand_augment: int = setting(0, "(operations) Keras' RandAugment on every training batch, "
                                   "after the ImageDataGenerator-style warp: this many random "
                                   "colour/geometry operations, e.g. 2; 0: off")
    ema: float = setting(0.0, "(momentum) validate, keep and save an exponential moving average "
                              "of the weights (Keras' optimizer EMA), e.g. 0.99; 0: off",
                              search=("choice", 0.0, 0.99, 0.999))
    precise_bn: bool | None = setting(
        None, "after training, recompute every trainable BatchNorm layer's statistics over "
              "the training photos, un-augmented and at full size, with the kept weights "
              "(PreciseBN; a frozen pretrained body keeps its own), before calibration and the "
              "test; default: the preset's (on for fast-, long-, hires- and resnet-catsdogs)")
    progressive_start: float | None = setting(
        None, "(fraction) progressive resizing: the first epoch trains on images scaled to this "
              "fraction of the model's size (the preset's, or --image-size), growing to full "
              "size by 3/4 of the epochs, both stages' in a two-stage run (validation and the "
              "saved model always use full size); 1: off; default: the preset's",
              search=("choice", 0.5, 0.75, 1.0))
    steps_per_execution: int | None = setting(
        None, "(steps) training steps per call into TensorFlow: fewer Python round trips, "
              "faster for small models; the progress bar moves in these steps; default: the preset's")
    weights: str = setting(
        "none", "where the network starts: none (from scratch); imagenet (keras.applications "
                "presets: Keras' download, kept in ~/.keras/models); a weights file for the "
                "body (*_notop.h5 or .weights.h5); or a catsdogs run folder (its layers up to "
                "the head; its head too when its classes are the same). Any start but none "
                "trains the head alone first (the body frozen)")
    # transfer learning, second stage: training/stages.py
    fine_tune_epochs: int = setting(
        0, "(epochs) after --epochs of the head alone, this many more with the body unfrozen "
           "(BatchNorm layers stay in inference mode; a new optimizer); 0: no second stage")
    fine_tune_learning_rate: float | None = setting(
        None, "(float) the second stage's (peak) learning rate; default: a tenth of "
              "--learning-rate",
        search=("scales", 1.0, 5.0, 10.0))  # a tenth, half or all of the preset's learning rate
    unfreeze: str = setting(
        UNFREEZE_ALL, "(all or K) what the second stage trains: all, or the last K layers with "
                      "weights before the head (BatchNorm layers not counted, never trained)")
    cache_features: bool | None = setting(
        None, "stage one on features computed once: the frozen body runs once over the "
              "training and validation images and the head trains on its outputs (Keras' "
              "fast feature extraction; stage one sees no augmentation then); default: on when "
              "the body starts frozen, nothing augments the images and they are decoded into "
              "memory (not with a disk cache or --cache none: the features would fill it)")
    seed: int = setting(42, "(int) seeds Python, NumPy and Keras, and the split")
    split_seed: int | None = setting(
        None, "(int) seeds the photos' roles alone (--val-split, --selection-split, "
              "--calibration-split); default: --seed. train --seeds holds it at the first seed, "
              "so every member holds out the same photos and their ensemble can be calibrated "
              "on photos none of them trained or chose on")
    class_weight: str = setting("none", "auto weights each class inversely to its count, for "
                                        "imbalanced folders", choices=CLASS_WEIGHTS)
    patience: int = setting(0, "(epochs) stop after this many without a better val accuracy; 0: off")
    refit: bool = setting(False, "after the run, train once more on its training photos and "
                                 "the photos that chose its epoch, for that many epochs, keeping "
                                 "the last, into RUN_DIR/refit/ (the usual final step; the "
                                 "temperature's photos and the test split stay out of it); "
                                 "the run keeps its best epoch (--keep-epoch last is refused: "
                                 "no photos would have chosen the epoch)")
    refit_union: bool = setting(False, "(bool, set by --refit in the run it starts) train on "
                                       "the training photos and those that chose the epoch",
                                internal=True)
    selection_chooses_runs: bool = setting(
        False, "(bool, set by tune in the runs it starts) the held-out photos choose among runs "
               "(a search's trials), so photos are set aside to fit the temperature as when they "
               "choose the epoch, whatever the run keeps", internal=True)
    strategy: str = setting("auto", "devices and machines to train on; --batch-size is per "
                                    "replica", choices=STRATEGIES)
    workers: int | None = setting(
        None, "(count, recorded by a multi-worker run as it starts) the processes that trained "
              "it: each read its share of the photos (every n-th file), and photos.json lists "
              "worker 0's, which calibrate and resume cut again", internal=True)
    # compression: training/distill.py, training/prune.py
    teacher: str | None = setting(
        None, "(run folder) distil: the loss mixes the labels with this run's softened "
              "predictions on the same augmented batch (catsdogs distill)")
    distill_temperature: float = setting(3.0, "(float) when distilling: both models' logits "
                                              "are divided by it; higher: softer targets")
    distill_alpha: float = setting(0.5, "(fraction) when distilling: weight of the teacher's "
                                        "targets in the loss; the labels weigh 1 - alpha")
    prune_from: str | None = setting(None, "(run folder) start from this run's model with its "
                                           "least important channels removed (catsdogs prune)")
    prune_keep: float | None = setting(None, "(fraction) with --prune-from: share of each "
                                             "prunable layer's channels kept")
    width: float = setting(1.0, "(factor) multiply the channels of the preset's convolutions "
                                "and hidden Dense layers (the ones catsdogs prune can narrow), "
                                "e.g. 0.5 or 2: a width sweep (bench/scaling.py); 1: the preset "
                                "as published",
                                search=("choice", 0.5, 1.0, 1.5, 2.0))
    image_size: int | None = setting(
        None, "(pixels) the side of the square images the model trains on and takes (photos "
              "are resized to it, as at the preset's size): e.g. 128 for a preset of 96, "
              "more detail for about (128/96)^2 the FLOPs; default: the preset's",
        # the lever that lifted long-catsdogs most (bench/RESULTS.md, "Image size on
        # long-catsdogs"); larger only: a preset that takes its own side takes these too
        search=("scales", 1.0, 1.25, 1.5))
    run_dir: str | None = setting(None, "(folder, new or empty) where to write the run; "
                                        "default: runs/<preset>-<time>")
    augment: AugmentConfig | None = setting(None, "augmentation; default: the preset's")

    @property
    def roles_seed(self):
        """The seed that decides which photos train, choose and calibrate."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def freezes_body_first(self):
        """Stage one trains the head alone on a frozen body (training/stages.py): any start
        from weights, or a second stage to come."""
        return self.weights != "none" or self.fine_tune_epochs > 0

    @property
    def downloads_cifar10(self):
        """The run reads the CIFAR-10 arrays `--dataset cifar10` downloads (32x32, its own test
        images as validation), not a folder: resolve_config leaves `data` None only then."""
        return self.dataset == "cifar10" and self.data is None

    @property
    def total_epochs(self):
        """Both stages' epochs: what a schedule over the whole run (progressive resizing, the
        epoch count in logs) spans."""
        return self.epochs + self.fine_tune_epochs

    def __post_init__(self):
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", from_dict(AugmentConfig, self.augment))
        check_choices(self)
        _check(self.epochs is None or self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(self.batch_size is None or self.batch_size >= 1, "batch_size", self.batch_size,
               "an integer >= 1")
        _check(self.learning_rate is None or (math.isfinite(self.learning_rate) and self.learning_rate > 0),
               "learning_rate", self.learning_rate, "a number > 0, e.g. 1e-3")
        _check(self.label_smoothing is None or 0 <= self.label_smoothing < 1, "label_smoothing",
               self.label_smoothing, "a fraction in [0, 1)")
        _check(self.weight_decay is None or self.weight_decay >= 0, "weight_decay",
               self.weight_decay, "a number >= 0")
        _check(self.progressive_start is None or 0 < self.progressive_start <= 1,
               "progressive_start", self.progressive_start, "a fraction in (0, 1]; 1 turns it off")
        _check(self.steps_per_execution is None or self.steps_per_execution >= 1,
               "steps_per_execution", self.steps_per_execution, "an integer >= 1")
        _check(0 < self.val_split < 1, "val_split", self.val_split, "a fraction in (0, 1)")
        _check(0 <= self.selection_split < 1, "selection_split", self.selection_split,
               "a fraction in [0, 1), e.g. 0.15; 0 turns it off")
        _check(0 <= self.calibration_split < 1, "calibration_split", self.calibration_split,
               "a fraction in [0, 1), e.g. 0.5")
        _check(math.isfinite(self.mixup) and self.mixup >= 0, "mixup", self.mixup,
               "a number >= 0, e.g. 0.2 (0 turns it off)")
        _check(math.isfinite(self.cutmix) and self.cutmix >= 0, "cutmix", self.cutmix,
               "a number >= 0, e.g. 1 (0 turns it off)")
        _check(0 <= self.rand_augment <= 8, "rand_augment", self.rand_augment,
               "an operation count in 0..8, e.g. 2 (0 turns it off)")
        _check(0 <= self.ema < 1, "ema", self.ema, "a momentum in [0, 1), e.g. 0.99 (0 turns it off)")
        if self.ema and self.lookahead:
            raise CatsDogsError("--ema and --lookahead both average the weights", where="--ema",
                                fix="give one of them")
        if self.lookahead and self.fine_tune_epochs:
            # stage two's new optimizer counts its steps from 0 again, while the average and the
            # step it was last taken at are stage one's: each epoch's end would restore them
            raise CatsDogsError("--lookahead cannot span two stages: stage two starts a new "
                                "optimizer", where="--lookahead",
                                fix="drop --fine-tune-epochs, or give --no-lookahead")
        if self.teacher is not None and (self.mixup or self.cutmix):
            raise CatsDogsError("--mixup/--cutmix with a teacher: the teacher would see mixed "
                                "images and labels it was not asked about", where="--teacher",
                                fix="drop --mixup and --cutmix when distilling")
        _check(isinstance(self.weights, str) and self.weights.strip() != "", "weights",
               self.weights, "none, imagenet, a weights file or a run folder")
        _check(self.fine_tune_epochs >= 0, "fine_tune_epochs", self.fine_tune_epochs,
               "an integer >= 0 (0 turns the second stage off)")
        _check(self.fine_tune_learning_rate is None or (
            math.isfinite(self.fine_tune_learning_rate) and self.fine_tune_learning_rate > 0),
            "fine_tune_learning_rate", self.fine_tune_learning_rate, "a number > 0, e.g. 1e-4")
        _check(self.unfreeze == UNFREEZE_ALL or (self.unfreeze.isdigit() and int(self.unfreeze) >= 1),
               "unfreeze", self.unfreeze, "all, or a layer count >= 1")
        if self.weights != "none" and (self.width != 1 or self.prune_from is not None):
            raise CatsDogsError("--weights with --width or --prune-from: those build their own "
                                "network, which the weights would not fit", where="--weights",
                                fix="drop one of them")
        if self.fine_tune_epochs and self.teacher is not None:
            raise CatsDogsError("--fine-tune-epochs with a teacher: a distilling run trains in "
                                "one stage", where="--fine-tune-epochs", fix="drop one of them")
        _check(self.patience >= 0, "patience", self.patience, "an integer >= 0 (0 turns it off)")
        if self.refit and self.keep_epoch == "last":
            raise CatsDogsError("--refit with --keep-epoch last: no photos chose the epoch, so "
                                "there is nothing to add and nothing left to calibrate on",
                                where="--refit", fix="give --keep-epoch best, or drop --refit")
        # compression
        _check(math.isfinite(self.distill_temperature) and self.distill_temperature > 0,
               "distill_temperature", self.distill_temperature, "a number > 0, e.g. 3")
        _check(0 <= self.distill_alpha <= 1, "distill_alpha", self.distill_alpha,
               "a fraction in [0, 1]")
        _check(self.prune_keep is None or 0 < self.prune_keep <= 1, "prune_keep",
               self.prune_keep, "a fraction of channels in (0, 1]")
        _check(self.image_size is None or 16 <= self.image_size <= 1024, "image_size",
               self.image_size, "a side in pixels from 16 to 1024, e.g. 128")
        _check(math.isfinite(self.width) and 0 < self.width <= 16, "width", self.width,
               "a factor in (0, 16], e.g. 0.5 or 2")
        if self.prune_from is not None and self.width != 1:
            raise CatsDogsError("--width and --prune-from both given: a pruned run's widths are "
                                "its source's, narrowed by --prune-keep", where="--width",
                                fix="drop --width")
        if self.prune_from is not None and self.prune_keep is None:
            raise CatsDogsError("--prune-from needs --prune-keep", fix="e.g. --prune-keep 0.5")
        if self.teacher is not None and self.class_weight == "auto":
            raise CatsDogsError("--class-weight auto does not work with a teacher (Keras' "
                                "Distiller ignores sample weights)", fix="--class-weight none")
        if (self.train_dir is None) != (self.val_dir is None):
            raise CatsDogsError("--train-dir and --val-dir go together", fix="give both, or use --data")
        if self.train_dir is not None and self.data is not None:
            raise CatsDogsError("--data and --train-dir/--val-dir both given", fix="give one of them")


def _check(ok, name, value, expected, hint=""):
    if not ok:
        raise CatsDogsError(f"bad value for --{flag_name(name)}: expected {expected}, received {value!r}",
                            fix=hint or None)


def _close_match(word, choices):
    match = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"did you mean {match[0]!r}?" if match else ""


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def flag_name(field_name):
    return field_name.replace("_", "-")


# ---------------------------------------------------------------- dicts and JSON files


def check_keys(cls, values, source="config", prefix=""):
    """Reject keys that are not fields of `cls`, with a close-match hint (`prefix`: the
    enclosing setting's name and a dot, for a nested object such as augment)."""
    if not isinstance(values, dict):
        raise CatsDogsError("settings must be a JSON object", where=source)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise CatsDogsError(f"unknown setting {prefix + key!r}", where=source,
                                fix=_close_match(key, names) or f"known: {', '.join(sorted(names))}")


def check_types(cls, values, source="config", prefix=""):
    """Reject a value whose JSON type does not fit its field's annotation (a quoted number, a
    fraction for a count, true for a count, a number for an on/off setting), naming the setting,
    before __post_init__ compares it with anything; nested dataclasses are checked key by key.
    Run after check_keys: `values` is a dict of known settings."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        name = f"{prefix}{key}"
        kind = hints[key]
        nested = _unwrap_optional(kind)
        if dataclasses.is_dataclass(nested) and isinstance(value, dict):
            check_keys(nested, value, source, prefix=f"{name}.")
            check_types(nested, value, source, prefix=f"{name}.")
            continue
        want = _type_wanted(kind, cls.__dataclass_fields__[key])
        if want is None:
            continue
        fits = want[0]
        if not fits(value):
            fix = f"write {want[2]}"
            if isinstance(value, str):
                try:
                    unquoted = json.loads(value)
                except ValueError:
                    unquoted = value
                if not isinstance(unquoted, str) and fits(unquoted):
                    fix = f"write it without quotes: {value.strip()}"
            shown = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
            raise CatsDogsError(f"bad value for setting {name!r}: expected {want[1]}, "
                                f"received {shown}", where=source, fix=fix)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)  # True is no count


def is_number(value):
    """A JSON or Python number: int or float, not a bool (which Python counts as an int) and
    not a string (which float() would take)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_wanted(kind, field):
    """(fits(value), what it expects, an example) for a field's annotation, or None where
    there is nothing to check (a type this mapping does not know)."""
    optional = kind is not _unwrap_optional(kind)
    kind = _unwrap_optional(kind)
    if kind is bool:
        want = (lambda v: isinstance(v, bool), "true or false", "true or false, without quotes")
    elif kind is int:
        want = (_is_int, "an integer", "a whole number without quotes, e.g. 3")
    elif kind is float or kind == int | float:
        want = (is_number, "a number", "a number without quotes, e.g. 0.5")
    elif kind is str:
        want = (lambda v: isinstance(v, str), "a string", 'text in double quotes, e.g. "x"')
    elif typing.get_origin(kind) is tuple:
        def numbers(v):
            return isinstance(v, (list, tuple)) and all(is_number(x) for x in v)
        if field.metadata.get("nargs") == "+":  # Z or [LO, HI]
            want = (lambda v: is_number(v) or numbers(v), "a number or a list of numbers",
                    "a number or a list of numbers, e.g. [0.9, 1.1]")
        else:
            want = (numbers, "a list of numbers", "a list of numbers, e.g. [0.9, 1.1]")
    elif dataclasses.is_dataclass(kind):
        want = (lambda v: isinstance(v, (dict, kind)), "an object of settings",
                'an object of settings, e.g. {"horizontal_flip": true}')
    else:
        return None
    if optional:
        fits = want[0]
        want = (lambda v: v is None or fits(v), f"{want[1]} or null", f"{want[2]}, or null")
    return want


def from_dict(cls, values, source="config"):
    """Build `cls` from a dict (JSON), rejecting unknown keys with a close-match hint."""
    check_keys(cls, values, source)
    return cls(**values)


def to_dict(config):
    return dataclasses.asdict(config)


def load_json(path):
    """Read a JSON settings file, or say in one line why it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CatsDogsError("file not found", where=path, fix="check the path") from None
    except (IsADirectoryError, NotADirectoryError):
        raise CatsDogsError("not a file", where=path, fix="give the JSON file's path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CatsDogsError(f"not valid JSON: {error}", where=path,
                            fix="give the JSON file you meant, or correct its JSON") from None
    except RecursionError:
        raise CatsDogsError("JSON nested too deeply to read", where=path,
                            fix="give the JSON file you meant, or correct its JSON") from None


def absolute_setting(name, value):
    """`value` of setting `name` as config.json stores it: a file or folder as an absolute path
    (`~` expanded), so the run resumes, calibrates, prunes and exports from any folder; any
    other setting, a named start (--weights imagenet) or None as it is."""
    if name not in PATH_SETTINGS or not isinstance(value, str) or value in NAMED_WEIGHTS:
        return value
    return os.path.abspath(os.path.expanduser(value))


# ---------------------------------------------------------------- run folders' config.json

CONFIG_VERSION = 1  # raise it, and teach `upgrade` the step, whenever config.json changes
VERSION_KEY = "config_version"
# Settings added after the first run folders: a config.json without one (written before it
# existed) resumes with the value its run trained with, as no run of that time could set it.
SETTINGS_ADDED_LATER = {"progressive_start": 1.0, "steps_per_execution": 1,
                        "cache": "ram",  # decoded pixels in memory, as before the disk cache
                        "optimizer": "adam", "lookahead": False, "selection_split": 0.0,
                        # compression: off
                        "teacher": None, "distill_temperature": 3.0, "distill_alpha": 0.5,
                        "prune_from": None, "prune_keep": None, "width": 1.0,
                        "image_size": None,  # the preset's
                        # regularisers and weight averaging: off
                        "mixup": 0.0, "cutmix": 0.0, "rand_augment": 0, "ema": 0.0,
                        "precise_bn": False,  # the statistics as training left them
                        # the epoch choice and the temperature's photos: runs before them kept
                        # the best epoch and fitted the temperature on the photos that chose it
                        "keep_epoch": "best", "calibration_split": 0.0,
                        "calibration_minimum": 0,  # their share was set aside however small
                        "refit": False, "refit_union": False, "selection_chooses_runs": False,
                        # transfer learning: one stage
                        "fine_tune_epochs": 0, "fine_tune_learning_rate": None,
                        "unfreeze": UNFREEZE_ALL}


def run_config_dict(config):
    """A TrainConfig as its run folder's config.json holds it: the settings and their version."""
    return {VERSION_KEY: CONFIG_VERSION, **to_dict(config)}


def upgrade(values, source="config.json"):
    """A run's config.json of any catsdogs version, as today's settings (a dict).

    Version 0 (no `config_version`: catsdogs before 0.2) may lack settings added later; they
    are filled with what those runs used (SETTINGS_ADDED_LATER). A later version that renames
    or changes a setting adds its step here. A file from a newer catsdogs is refused, not
    guessed at.
    """
    if not isinstance(values, dict):
        raise CatsDogsError("settings must be a JSON object", where=source)
    values = dict(values)
    version = values.pop(VERSION_KEY, 0)
    if not isinstance(version, int) or not 0 <= version <= CONFIG_VERSION:
        raise CatsDogsError(f"config_version {version!r} is not one this catsdogs reads "
                            f"(0 to {CONFIG_VERSION})", where=source,
                            fix="use the catsdogs version that wrote the run")
    for key, value in SETTINGS_ADDED_LATER.items():
        if values.get(key) is None:
            values[key] = value
    return values


def read_run_config(path):
    """The TrainConfig of a run folder's config.json, upgraded from any earlier version."""
    values = upgrade(load_json(path), source=path)
    check_keys(TrainConfig, values, source=path)
    check_types(TrainConfig, values, source=path)  # needs known keys: after check_keys
    try:
        return TrainConfig(**values)
    except CatsDogsError as error:  # it names a flag; the value came from the file
        raise CatsDogsError(f"the run's settings: {error.what}", where=path,
                            fix="restore the file, or start a new run") from None


def read_settings_file(path):
    """A `--config FILE.json` of settings; a copied run config.json is fine (its version key is
    dropped: what it leaves out comes from the preset, not from an old run's defaults; so is its
    run_dir, the folder of the run it was copied from, which would refuse the new run, and its
    worker count, which the new run records for itself)."""
    values = load_json(path)
    if isinstance(values, dict) and values.pop(VERSION_KEY, None) is not None:
        values.pop("run_dir", None)
        values.pop("workers", None)
    check_keys(TrainConfig, values, source=path)
    check_types(TrainConfig, values, source=path)
    return values


# ---------------------------------------------------------------- command-line flags


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is a CatsDogsError: one `error:` line (not usage + error),
    with the closest flag for a misspelt one (argparse suggests only from Python 3.14 on)."""

    def error(self, message):
        if message.startswith("unrecognized arguments: "):
            typed = message.removeprefix("unrecognized arguments: ").split()
            close = [difflib.get_close_matches(flag.split("=")[0], self._option_string_actions,
                                               n=1, cutoff=0.75)  # a typo, not a likeness
                     for flag in typed if flag.startswith("--")]
            if any(close):
                raise CatsDogsError(message, fix=f"did you mean {next(c for c in close if c)[0]}?")
        raise CatsDogsError(message, fix=f"see {self.prog} --help")


def command_parser(command, module_doc):
    """The parser of `catsdogs <command>` (and of `python -m catsdogs.<command>`, the same
    parser): the module docstring's first line is the description, the rest (its usage
    examples) the epilog."""
    first, *rest = module_doc.splitlines()
    parser = OneLineArgumentParser(prog=f"catsdogs {command}", description=first,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(rest))
    output = parser.add_argument_group("output (results on stdout, progress on stderr)") \
        .add_mutually_exclusive_group()  # one of them: --quiet --verbose asks for two things
    output.add_argument("--quiet", "-q", action="store_true",
                        help="print only results and errors (for scripts)")
    output.add_argument("--verbose", action="store_true",
                        help="also TensorFlow's own start-up messages")
    return parser


def _unwrap_optional(annotation):
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None))
    return annotation


def int_or_float(text):
    """A flag value that keeps an integer an int ("3" -> 3, "3.0" -> 3.0): for settings where,
    as in ImageDataGenerator, the type carries meaning."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def add_flags(parser, cls, skip=(), helps=None, defaults=None):
    """Add one `--flag` per field of `cls` (nested dataclasses flattened into their own group).

    Flags default to argparse.SUPPRESS, so `given_flags()` sees only what the user typed and
    presets and config files can fill in the rest. Internal settings (setting(internal=True))
    are no flags: catsdogs sets them for the runs it starts, and a typed one is an unknown
    flag. `helps` ({field: text}) replaces a setting's declared help (and default) where a
    command gives it another meaning, e.g. tune's run folder. `defaults` ({field: text}) names
    where a command fills a setting from instead of its declared default (prune: "the run's").
    A nested dataclass whose field defaults to None (augmentation) takes the preset's values:
    its flags say so, not the class's own defaults, which no preset trains with.
    """
    helps, defaults = helps or {}, defaults or {}
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for field in dataclasses.fields(cls):
        if field.name in skip or field.metadata.get("internal"):
            continue
        kind = _unwrap_optional(hints[field.name])
        if dataclasses.is_dataclass(kind):
            shown = defaults.get(field.name) or ("the preset's" if field.default is None else None)
            add_flags(parser, kind, helps=helps, defaults=dict.fromkeys(
                (f.name for f in dataclasses.fields(kind)), shown) if shown else None)
            continue
        help_text = helps.get(field.name) or _help_with_default(field, defaults.get(field.name))
        options = dict(dest=field.name, default=argparse.SUPPRESS, help=help_text)
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is tuple:
            options.update(type=float, nargs=field.metadata["nargs"] or 2, metavar="X")
        elif kind == int | float:
            options["type"] = int_or_float
        else:
            options["type"] = kind
        group.add_argument(f"--{flag_name(field.name)}", **options)


def _help_with_default(field, shown):
    """A setting's help and its default: `shown` (where a command fills it from elsewhere) in
    place of the declared one, whose "; default: ..." clause it drops."""
    text = field.metadata["help"]
    if shown is not None:
        return f"{text.split('; default: ')[0]} [default: {shown}]"
    return text + ("" if field.default is None else f" [default: {field.default}]")


def given_flags(namespace, cls):
    """Split parsed flags into {field: value} for `cls` and its nested dataclasses."""
    given = vars(namespace)
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        kind = _unwrap_optional(hints[field.name])
        if dataclasses.is_dataclass(kind):
            nested = {f.name: given[f.name] for f in dataclasses.fields(kind) if f.name in given}
            if nested:
                values[field.name] = nested
        elif field.name in given:
            values[field.name] = given[field.name]
    return values


def merge(*layers):
    """Merge dicts of settings, later ones winning; nested dicts merge key by key."""
    merged = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged
