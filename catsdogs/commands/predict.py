"""Classify image files and whole folders with a trained model.

    catsdogs predict runs/seed-catsdogs-20261124-142544 my_photos/
    catsdogs predict model.keras a.jpg b.png --output predictions.csv
    catsdogs predict RUN_DIR photos/ --top-k 3 --output predictions.json
    catsdogs predict RUN_DIR photos/ --sort-into sorted/     # copies, never moves
    catsdogs predict RUN_DIR photos/ --tta shift   # test-time augmentation: 6 views
    catsdogs predict model.h5 photos/ --class-names cats,dogs   # a tutorial's own model
    catsdogs predict RUN_DIR photos/ --explain heatmaps/       # Grad-CAM: why each class
    catsdogs predict RUN_DIR photos/ --min-confidence auto --sort-into sorted/   # + unknown/

Folders are read recursively; dot-files are ignored. Files that cannot be read (corrupt, empty,
not an image, too large) are listed on stderr with the reason and skipped, so stdout holds the
rows only; the command fails (exit 1) only if no file at all could be classified. Your files are
never modified.
"""

from pathlib import Path

from catsdogs import runs
from catsdogs.commands.common import (add_inference_flags, add_model_flags, check_at_least_one,
                                      model_options)
from catsdogs.config import command_parser
from catsdogs.console import display, log
from catsdogs.errors import CatsDogsError, RunFailed, command_main
from catsdogs.inference.predict import (DEFAULT_THRESHOLD, check_paths_exist, predict_paths,
                                        is_predict_output, sort_into, write_output)


def build_parser():
    parser = command_parser("predict", __doc__)
    add_model_flags(parser)
    parser.add_argument("paths", nargs="+", help="image files and folders (read recursively)")
    parser.add_argument("--output", help="write rows to FILE.csv or FILE.json")
    parser.add_argument("--top-k", type=int, default=1, help="classes listed per image [default: 1]")
    parser.add_argument("--threshold", type=float,
                        help="two-class models: probability of the second class needed to pick "
                             "it [default: 0.5]")
    parser.add_argument("--sort-into", metavar="DIR", help="copy each image into DIR/<class>/ "
                                                           "(DIR/unknown/ below --min-confidence)")
    parser.add_argument("--explain", metavar="DIR",
                        help="write each image with its Grad-CAM heatmap over it into DIR, "
                             "named <file>-<class it explains>.jpg")
    add_inference_flags(parser)
    return parser


OUTPUT_TYPES = (".csv", ".json")  # what inference.predict.write_output writes


def check_flags(args):
    """Bad flag values, each one line naming the flag, before anything is read or loaded."""
    check_at_least_one("--batch-size", args.batch_size)
    check_at_least_one("--top-k", args.top_k)
    if args.output and Path(args.output).suffix.lower() not in OUTPUT_TYPES:
        raise CatsDogsError(f"bad value for --output: expected a name ending in .csv or .json, "
                            f"received {args.output!r}", fix="e.g. --output predictions.csv")
    if args.output and Path(args.output).is_dir():
        raise CatsDogsError("--output is a folder", where=args.output,
                            fix="give a file name inside it, e.g. predictions.csv")
    check_output_file(args.output)


def check_output_file(output):
    """--output names a new file or an earlier output of predict, checked before the work and
    again just before the write (another program may have written the name meanwhile)."""
    if output and Path(output).exists() and not is_predict_output(output):
        raise CatsDogsError("the file exists and is not an earlier output of predict: predict "
                            "writes over no other file", where=output,
                            fix="give --output a new file name")


def check_threshold(threshold, classifier, model):
    """--threshold moves a two-class model's decision; on more classes there is no single
    probability to move, so a given one is refused rather than ignored."""
    if threshold is not None and not classifier.is_binary:
        raise CatsDogsError(f"--threshold is for two-class models; this one has "
                            f"{len(classifier.class_names)} classes", where=model,
                            fix="drop --threshold (the most probable class is picked), or use "
                                "--min-confidence to send unsure photos to unknown")


def _run(args):
    from catsdogs.inference.classifier import load

    check_flags(args)
    check_paths_exist(args.paths)  # before the model (and TensorFlow) loads
    for flag, folder in (("--sort-into", args.sort_into), ("--explain", args.explain)):
        for path in args.paths if folder else ():  # else the next run reads them as a class
            if Path(path).is_dir():
                runs.check_outside(folder, path, flag)
    for folder in (args.sort_into, args.explain, args.output and Path(args.output).parent):
        if folder:
            runs.check_writable(folder)  # and so is a folder the machine refuses
    classifier = load(args.model, **model_options(args))
    check_threshold(args.threshold, classifier, args.model)
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    rows, skipped = predict_paths(classifier, args.paths, args.batch_size, args.top_k,
                                  threshold, tta=args.tta, min_confidence=args.min_confidence,
                                  explain_into=args.explain)
    for path, reason in skipped:  # stderr: stdout holds the rows only (docs/errors.md)
        log().warning(f"skipped {display(path)}: {reason}")
    if not rows:
        raise RunFailed("no image could be classified", where=" ".join(args.paths),
                        fix="pass image files or folders holding JPEG, PNG, BMP, GIF, WebP or "
                            "TIFF images")
    # a multiclass row lists its top k classes; a binary one both, only if asked (--top-k 2)
    with_top_k = not classifier.is_binary or args.top_k > 1
    width = min(60, max(len(display(r.path)) for r in rows))
    for row in rows:
        extra = "  " + ", ".join(f"{c} {p:.3f}" for c, p in row.top_k) if args.top_k > 1 else ""
        print(f"{display(row.path):<{width}}  {row.predicted:<12} {row.probability:.4f}{extra}")
    log().info(f"{len(rows)} classified, {len(skipped)} skipped")
    if args.output:
        check_output_file(args.output)
        write_output(rows, skipped, args.output, with_top_k)
        print(f"Wrote {args.output}")
    if args.explain:
        print(f"Grad-CAM overlays in {args.explain}")
    if args.sort_into:
        sort_into(rows, args.sort_into)
        print(f"Copied {len(rows)} images into {args.sort_into}/<class>/")
    return 0


main = command_main(build_parser, _run)
