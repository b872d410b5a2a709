"""Combine runs into one model that averages their calibrated probabilities.

    catsdogs ensemble runs/resnet-seed1 runs/resnet-seed2 runs/resnet-seed3 --out runs/ensemble

The runs must share their classes (in the same order) and input size: seeds of one preset,
or k-fold's fold models. The folder written (model.keras, class_names.json, ensemble.json,
saved_model/) is used like a run folder by predict, evaluate, calibrate, export and serve.
"""

from pathlib import Path

from catsdogs.config import command_parser
from catsdogs.errors import command_main


def build_parser():
    parser = command_parser("ensemble", __doc__)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders to combine (2 or more)")
    parser.add_argument("--out", required=True, help="folder to write the ensemble into")
    return parser


def _run(args):
    from catsdogs import runs

    for run in args.runs:
        runs.existing_run_dir(run)  # a wrong path is one line before TensorFlow loads
    if not (Path(args.out) / runs.MODEL_FILE).exists():  # that one: write_ensemble's own line
        runs.check_output_folder(args.out, "--out")  # so is a file, or a folder of other files
    from catsdogs.inference.ensemble import write_ensemble

    out = write_ensemble(args.runs, args.out)
    saved = out / runs.SAVED_MODEL_DIR  # none where Keras does not run on TensorFlow
    print(f"Ensemble of {len(args.runs)} runs: {out / runs.MODEL_FILE}"
          + (f" (SavedModel: {saved})" if saved.exists() else ""))
    return 0


main = command_main(build_parser, _run)
