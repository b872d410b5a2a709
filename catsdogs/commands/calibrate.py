"""Fit a run's temperature on held-out images, so its probabilities mean what they say.

    catsdogs calibrate runs/resnet-catsdogs-20261124-142544          # its validation split
    catsdogs calibrate RUN_DIR photos/held_out                       # or other labelled images
    catsdogs calibrate RUN_DIR ~/PetImages-held-out --cache disk      # decoded once, for reuse

Training does this by itself, on photos that chose nothing; this adds calibration.json to
runs made before it did, or fits it again on other images (given photos that trained the model
or chose its epoch, by its photos.json, it says so: the temperature would come out too sharp). A temperature is kept only when it
can be trusted: on at least 100 photos, away from the search's bound, and only if temperatures
fitted on half of the photos lower the other half's negative log-likelihood (else T = 1, and
the line says why). Writes calibration.json (the temperature, calibration error
and log-likelihood before and after, the `--min-confidence auto` threshold), rewrites
saved_model/ with the temperature inside, and plots/reliability.png.
"""

import os

from catsdogs import config as cfg
from catsdogs.config import command_parser
from catsdogs.data.cache import CacheConfig
from catsdogs.errors import command_main


def build_parser():
    parser = command_parser("calibrate", __doc__)
    parser.add_argument("run", help="a run folder")
    parser.add_argument("data_dir", nargs="?",
                        help="class sub-folders to fit on [default: the photos the run set aside "
                             "for calibration; else its validation split, with a warning]")
    cfg.add_flags(parser, CacheConfig)
    return parser


def _run(args):
    from catsdogs import runs
    from catsdogs.data.datasets import list_class_folders

    cache = cfg.given_flags(args, CacheConfig)  # else the run's own settings
    CacheConfig(**cache)  # a bad --cache is one line before TensorFlow loads
    run_dir = runs.existing_run_dir(args.run)
    runs.check_writable(run_dir)  # calibration.json and saved_model/ are rewritten in it
    if args.data_dir:
        list_class_folders(args.data_dir)  # a wrong folder is one line before TensorFlow loads
    from catsdogs.inference.calibrate import calibrate_run, held_out_photos
    from catsdogs.inference.classifier import load

    with runs.run_folder_lock(run_dir):
        classifier = load(run_dir, calibrated=False)  # refitted: a broken one is replaced
        split, labels, source = held_out_photos(run_dir, classifier, args.data_dir, cache)
        report = calibrate_run(run_dir, classifier.model, split.pixel_view(), labels,
                               classifier.class_names, fitted_on=source,
                               fitted_files=[os.path.realpath(p) for p in split.paths])
    print(f"temperature {report['temperature']:.4f} on {report['images']} images ({source}): "
          f"{report['decision']}")
    print(f"expected calibration error {report['ece_before']:.4f} -> {report['ece_after']:.4f} "
          f"({report['ece_after_cross_fitted']:.4f} on images T was not fitted on), "
          f"negative log-likelihood {report['nll_before']:.4f} -> {report['nll_after']:.4f}")
    views = report.get("tta") or {}
    if views:
        print("with test-time views (predict/evaluate --tta): " + "; ".join(
            f"{mode} T = {fitted['temperature']:.4f}, ECE {fitted['ece_before']:.4f} -> "
            f"{fitted['ece_after']:.4f}" for mode, fitted in views.items()))
    print(f"Wrote {run_dir / 'calibration.json'} and {run_dir / runs.SAVED_MODEL_DIR}")
    return 0


main = command_main(build_parser, _run)
