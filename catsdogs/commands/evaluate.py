"""Measure a trained model on a folder of class sub-folders, with reports a person can read.

    catsdogs evaluate runs/seed-catsdogs-20261124-142544 data/cats_and_dogs/validation
    catsdogs evaluate model.keras photos/ --out reports/ --tta
    catsdogs evaluate RUN_DIR cifar10/test --tta shift   # flips and shifts
    catsdogs evaluate model.h5 photos/ --class-names cats,dogs   # a tutorial's own model
    catsdogs evaluate RUN_DIR ~/PetImages --cache disk   # decoded once, read a batch at a time

Writes metrics.json (loss, accuracy, per-class precision/recall/F1, ROC AUC when both of two
classes are there, photos_the_model_used: how many trained it or chose its epoch),
confusion_matrix.json, predictions.csv (every image, highest loss first), plots/
confusion_matrix.png, plots/reliability.png, plots/most_wrong.png (the most confidently wrong
images) and, for a Keras model, plots/most_wrong_gradcam.png (where it saw the wrong class)
into OUT, by default `eval-<data folder name>/` beside the model.
"""

from pathlib import Path

from catsdogs import config as cfg
from catsdogs.commands.common import (add_inference_flags, add_model_flags, check_at_least_one,
                                      model_options)
from catsdogs.config import command_parser
from catsdogs.data.cache import CacheConfig
from catsdogs.errors import CatsDogsError, command_main
from catsdogs.inference.evaluate import CONFUSION_FILE, default_out, evaluate


def build_parser():
    parser = command_parser("evaluate", __doc__)
    add_model_flags(parser)
    parser.add_argument("data_dir", help="folder of class sub-folders named like the model's "
                                         "classes (one is enough: it gives that class's recall)")
    parser.add_argument("--out", help="report folder [default: eval-<data name>/ beside the model]")
    parser.add_argument("--ood-dir", metavar="DIR",
                        help="images of other things (any layout): how many are rejected as "
                             "unknown, and the AUROC of the max probability")
    add_inference_flags(parser)
    cfg.add_flags(parser, CacheConfig)
    return parser


def _run(args):
    from catsdogs import runs
    from catsdogs.data.datasets import list_class_folders
    from catsdogs.inference.classifier import load, model_file

    check_at_least_one("--batch-size", args.batch_size)  # before the model loads
    cache = CacheConfig(**cfg.given_flags(args, CacheConfig))  # so is a bad --cache
    list_class_folders(args.data_dir, min_classes=1)  # one line before the model loads
    if args.ood_dir and not Path(args.ood_dir).is_dir():  # so is a wrong --ood-dir
        raise CatsDogsError("not a folder" if Path(args.ood_dir).exists() else "folder not found",
                            where=args.ood_dir,
                            fix="give --ood-dir a folder of images of none of the classes")
    out = args.out or default_out(model_file(args.model), args.data_dir)
    # and so is a report folder that is a run, lies in the data, or holds a user's files
    runs.check_output_folder(out, "--out", reads=args.data_dir, ours=(CONFUSION_FILE,))
    classifier = load(args.model, **model_options(args))
    metrics = evaluate(classifier, args.data_dir, out, args.tta, args.batch_size,
                       ood_dir=args.ood_dir, min_confidence=args.min_confidence,
                       cache=cache)
    print(f"{metrics['images']} images: accuracy {metrics['accuracy']:.4f}, "
          f"loss {metrics['loss']:.4f}"
          + (f", ROC AUC {metrics['roc_auc']:.4f}" if metrics.get("roc_auc") is not None else ""))
    print(f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for name, row in metrics["per_class"].items():
        print(f"{name:<14}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
              f"{row['support']:>9}")
    calibration = metrics["calibration"]
    print(f"calibration (temperature {calibration['temperature']:.3f}): expected calibration "
          f"error {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}, negative "
          f"log-likelihood {calibration['nll_before']:.4f} -> {calibration['nll_after']:.4f}")
    if "ood" in metrics:
        ood = metrics["ood"]
        print(f"out of distribution ({ood['images']} images): AUROC {ood['auroc']:.4f}; at "
              f"min confidence {ood['threshold']:.3f}, {ood['rejected']:.1%} rejected as unknown "
              f"({ood['in_distribution_rejected']:.1%} of {args.data_dir})")
    print("highest losses (all in predictions.csv):")
    for row in metrics["worst"]:
        print(f"  {row['loss']:>9}  true {row['true']:<12} predicted {row['predicted']:<12} "
              f"{row['probability']}  {row['path']}")
    print(f"Report: {metrics['out']}")
    return 0


main = command_main(build_parser, _run)
