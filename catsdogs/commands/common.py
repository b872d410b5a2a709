"""Flags that several commands share, defined once."""

from fractions import Fraction
from pathlib import Path

from catsdogs.errors import CatsDogsError
from catsdogs.runs import check_class_names
from catsdogs.inference.tta import TTA_MODES


def add_inference_flags(parser):
    """--tta [flip|shift], --min-confidence and --batch-size, shared by predict and evaluate."""
    add_min_confidence_flag(parser)
    parser.add_argument("--tta", nargs="?", const="flip", choices=TTA_MODES,
                        help="test-time augmentation: average the image with its mirror image "
                             "(flip, the default), or also with diagonal shifts of both, 1 px "
                             "per 32 of the side (shift)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model call "
                                                                   "[default: 64]")


def check_at_least_one(flag, value):
    """A count flag below 1 (a batch size, a top k): one line before anything loads, in the
    wording of train's --batch-size."""
    if value < 1:
        raise CatsDogsError(f"bad value for {flag}: expected an integer >= 1, received {value!r}")


ANY_MODEL = "run folder, .keras or .h5 file, .tflite or .onnx export, or SavedModel folder"


def add_model_flags(parser, kinds=ANY_MODEL, exports=True):
    """MODEL (`kinds`: the models this command reads) and what a model from elsewhere (a
    tutorial's model.h5) may need said about it; `exports`: the command reads exported models
    too (SavedModel, .tflite, .onnx), so --trust-model means something to it."""
    parser.add_argument("model", help=kinds)
    parser.add_argument("--class-names", metavar="NAMES", type=class_names_flag,
                        help="the model's classes in output order, as cats,dogs or a JSON file "
                             "[default: class_names.json beside the model]")
    parser.add_argument("--input-scale", metavar="FACTOR", type=scale_flag,
                        help=".h5 models: pixels 0..255 are multiplied by this before the model "
                             "[default: 1/255 if it has no Rescaling layer of its own, else 1]")
    if not exports:
        return
    parser.add_argument("--trust-model", action="store_true",
                        help="SavedModel, .tflite and .onnx models: load one even if it holds "
                             "operations a classifier never needs (files, processes, custom "
                             "ops), only for a model you would run as its author's program "
                             "[default: such models are refused]")


def model_options(args):
    """The keyword arguments of `inference.classifier.load` the model flags gave."""
    return {"class_names": args.class_names, "input_scale": args.input_scale,
            "trust_model": getattr(args, "trust_model", False)}


def class_names_flag(text):
    """--class-names: "cats,dogs", or a JSON file holding the list."""
    from catsdogs.inference.classifier import read_class_names

    if text.endswith(".json") or Path(text).is_file():
        return read_class_names(text)
    names = [name.strip() for name in text.split(",")]
    if len(names) < 2:
        raise CatsDogsError(f"bad value for --class-names: expected two or more names, received "
                            f"{text!r}", fix="e.g. --class-names cats,dogs")
    return check_class_names(names, "--class-names")


def scale_flag(text):
    """--input-scale: a number or a fraction such as 1/255."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise CatsDogsError(f"bad value for --input-scale: expected a number such as 1/255, "
                            f"received {text!r}") from None
    if value <= 0:
        raise CatsDogsError(f"bad value for --input-scale: expected a number > 0, received {text!r}")
    return value


def add_min_confidence_flag(parser):
    """--min-confidence P|auto, shared by predict and evaluate."""
    parser.add_argument("--min-confidence", metavar="P", type=min_confidence_flag,
                        help="below this probability a prediction is 'unknown'; auto: the "
                             "threshold that keeps 95%% of the run's validation images "
                             "(calibration.json) [default: off for predict, auto for evaluate "
                             "--ood-dir]")


def min_confidence_flag(text):
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise CatsDogsError(f"bad value for --min-confidence: expected a probability in (0, 1) "
                            f"or auto, received {text!r}")
    return value


def check_val_split_used(config, where="--val-split"):
    """A --val-split typed where the data brings its own validation photos would be ignored:
    said in one line instead, so the split a user asked for is never silently another (train,
    and distill and prune, whose data may come from their run's config.json)."""
    from catsdogs.data.datasets import find_split_folders
    from catsdogs.training.train import DEFAULT_DATA

    data = DEFAULT_DATA if config.data is None else config.data  # as resolve_config does
    if config.train_dir is not None:
        own = "--val-dir gives the validation photos"
    elif config.downloads_cifar10:
        own = "the downloaded CIFAR-10 validates on its own 10,000 test images"
    elif splits := find_split_folders(data):  # any --dataset: a folder's own split is used
        own = f"{data} has its own {splits[1].name}/ folder of validation photos"
    else:
        return
    raise CatsDogsError(f"--val-split is not used: {own}", where=where,
                        fix="drop it, or give --data a folder of class sub-folders "
                            "to split")
