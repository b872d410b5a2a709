"""Export a trained model for serving, and prove each export in its own runtime.

    catsdogs export runs/seed-catsdogs-20261124-142544 --format all
    catsdogs export model.keras --format tflite-int8 --calibration data/cats_and_dogs/train
    catsdogs export RUN_DIR --format all --check data/cats_and_dogs/validation
    catsdogs export model.h5 --class-names cats,dogs --calibration photos/train   # a tutorial's

Formats: saved_model (signature `serving_default` takes encoded JPEG/PNG bytes and returns
probabilities and class names; `serving_pixels` takes pixels), keras, tflite (float32),
tflite-fp16, tflite-int8 (full integer, calibrated on training images), onnx. Each file or folder
is written beside its destination and swapped in, so an existing export is never half-replaced.
"""

from pathlib import Path

from catsdogs.commands.common import add_model_flags, model_options
from catsdogs.config import command_parser
from catsdogs.errors import CatsDogsError, command_main
from catsdogs.inference.export import (FILE_NAMES, FORMATS, check, check_formats, default_out,
                                       export, format_check_table)


def build_parser():
    parser = command_parser("export", __doc__)
    add_model_flags(parser, "run folder, .keras or .h5 file (exports are made from the Keras "
                            "model)", exports=False)
    parser.add_argument("--format", nargs="+", default=["all"], metavar="FORMAT",
                        help=f"{', '.join(FORMATS)} or all [default: all]")
    parser.add_argument("--out", help="folder for the exports [default: exports/ beside the model]")
    parser.add_argument("--calibration", help="training images for int8 [default: the run's]")
    parser.add_argument("--int8-io", action="store_true", help="int8 TFLite takes and gives uint8")
    parser.add_argument("--check", metavar="DATA_DIR",
                        help="run every export on DATA_DIR and print a comparison table")
    return parser


INT8_FORMAT = "tflite-int8"  # the one format --calibration and --int8-io shape


def check_int8_flags(args, formats):
    """--calibration and --int8-io only shape the int8 TFLite file: given without it, they would
    be ignored, so they are one line instead."""
    if INT8_FORMAT in formats:
        return
    for flag, value in (("--calibration", args.calibration), ("--int8-io", args.int8_io)):
        if value:
            raise CatsDogsError(f"{flag} is for --format {INT8_FORMAT}, which is not asked for",
                                where=flag, fix=f"add {INT8_FORMAT} to --format, or drop {flag}")


def _run(args):
    formats = check_formats(args.format)  # "all" expanded; an unknown name is one line
    check_int8_flags(args, formats)
    if args.check and "keras" not in formats:
        formats = [*formats, "keras"]  # the reference the others are compared with
    from catsdogs import runs
    from catsdogs.data.datasets import list_class_folders
    from catsdogs.inference.classifier import load, model_file

    out = args.out or default_out(model_file(args.model))
    exported = Path(model_file(args.model)).resolve()
    if any((Path(out) / FILE_NAMES[name]).resolve() == exported for name in formats) or \
            (Path(out) / runs.CALIBRATION_FILE).exists():
        # an ensemble's folder holds class_names.json as an export does: its model.keras would
        # be replaced by one with the temperature inside, which its calibration.json scales again
        raise CatsDogsError("--out is the folder of the model it exports (or of another model: "
                            "it holds calibration.json, which no export writes)", where=out,
                            fix="give --out a new folder")
    # new, empty or an earlier export (its class_names.json), never inside the photos it reads;
    # a folder the machine refuses: one line before the model loads
    runs.check_output_folder(out, "--out", reads=args.check, ours=(runs.CLASS_NAMES_FILE,))
    runs.check_outside(out, args.calibration, "--out")
    # a wrong folder is one line before the exports, not after them
    for flag, folder in (("--check", args.check), ("--calibration", args.calibration)):
        if folder and not Path(folder).is_dir():
            raise CatsDogsError("folder not found", where=folder,
                                fix=f"give {flag} a folder of class sub-folders")
        if folder:
            list_class_folders(folder, min_classes=1)
    classifier = load(args.model, **model_options(args))
    written = export(classifier, formats, out, args.calibration, args.int8_io)
    if args.check:
        print("\n".join(format_check_table(check(written, args.check, classifier.source))))
    return 0


main = command_main(build_parser, _run)
