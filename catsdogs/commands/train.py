"""Train a CNN on class folders or CIFAR-10 and write a run folder.

    catsdogs train                                  # seed-catsdogs on data/cats_and_dogs
    catsdogs train --data ~/data/cats_and_dogs_filtered --epochs 30   # train/ + validation/
    catsdogs train --dataset cifar10 --data ~/data/cifar10   # catsdogs download cifar10 wrote it
    catsdogs train --resume runs/seed-catsdogs-20261124-101500
    catsdogs train --list-presets
    catsdogs train --preview-augmentation --rotation-range 30
    catsdogs train --data my_photos --preset fast-catsdogs --folds 5
    catsdogs train --data my_photos --preset fast-catsdogs --seeds 3

The run folder (runs/<preset>-<time>/) gets config.json, class_names.json, dataset.json,
photos.json (which photos trained, chose, calibrated and tested), history.csv, skipped.csv,
logs/ (TensorBoard), model.keras (the kept epoch: --keep-epoch), saved_model/,
calibration.json, plots/training_curves.png, plots/reliability.png (with photos held out to
calibrate on) and metrics.json.

--folds K trains K runs instead (k-fold cross-validation on the images of --data, pooled):
each on K-1 folds, choosing its epoch on a --selection-split of them (0.15 unless given), and
measured on the fold it never saw; it prints each fold's accuracy and their mean ± standard
deviation, and writes folds.json and fold-<k>/run/ into --run-dir (default:
runs/<preset>-<K>fold-<time>). Killed, the same command with that --run-dir skips the finished
folds.
"""

from catsdogs import config as cfg
from catsdogs.commands.common import check_val_split_used
from catsdogs.errors import CatsDogsError, command_main


def build_parser():
    parser = cfg.command_parser("train", __doc__)
    actions = parser.add_argument_group("actions")
    actions.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    actions.add_argument("--list-presets", action="store_true", help="list presets and exit")
    actions.add_argument("--preview-augmentation", action="store_true",
                         help="write plots/augmentation.png in a new run folder and exit")
    actions.add_argument("--folds", type=int, metavar="K",
                         help="k-fold cross-validation instead of one run: K runs, mean ± "
                              "standard deviation of their held-out accuracy")
    actions.add_argument("--seeds", type=int, metavar="N",
                         help="N runs of these settings with seeds --seed, --seed + 1, ...: "
                              "their mean ± standard deviation, and their ensemble "
                              "(RUN_DIR/seed-<s>/, RUN_DIR/ensemble/)")
    actions.add_argument("--config", metavar="FILE.json", help="settings file; flags override it")
    actions.add_argument("--local-workers", type=int, metavar="N",
                         help="train with N workers on this machine (--strategy multiworker on "
                              "127.0.0.1, free ports): try multi-machine training on one")
    cfg.add_flags(parser, cfg.TrainConfig)
    return parser


DEFAULT_VAL_SPLIT = cfg.TrainConfig.__dataclass_fields__["val_split"].default


def config_from_args(args):
    """defaults <- preset defaults <- --config file <- flags, as one TrainConfig."""
    from catsdogs.models.presets import DEFAULT_PRESET, get_preset

    from_file = cfg.read_settings_file(args.config) if args.config else {}
    flags = cfg.given_flags(args, cfg.TrainConfig)
    merged = cfg.merge(from_file, flags)
    dataset = merged.get("dataset", "folder")
    preset = get_preset(merged.get("preset") or DEFAULT_PRESET.get(dataset, "seed-catsdogs"))
    base = {"augment": cfg.to_dict(preset.recipe.augment)}
    config = cfg.TrainConfig(**cfg.merge(base, merged))
    # a settings file holds every setting (tune's best.json the default split too): only a
    # split of its own there, or one typed, is one the user asked for
    if "val_split" in flags:
        check_val_split_used(config)
    elif from_file.get("val_split", DEFAULT_VAL_SPLIT) != DEFAULT_VAL_SPLIT:
        check_val_split_used(config, where=f"{args.config} (val_split)")
    return config


def _run(args):
    from catsdogs.training import train

    if args.list_presets:
        from catsdogs.models.presets import describe_presets

        for line in describe_presets():
            print(line, flush=True)
    elif args.folds is not None:
        _cross_validate(args)
    elif args.seeds is not None:
        _several_seeds(args)
    elif args.local_workers is not None:
        return _local_workers(args)
    elif args.resume:
        given = [f"--{cfg.flag_name(name)}" for name in cfg.given_flags(args, cfg.TrainConfig)]
        if given or args.config:
            raise CatsDogsError("--resume takes its settings from the run's config.json",
                                where=args.resume,
                                fix=f"drop {', '.join(given + ['--config'] * bool(args.config))}")
        train.resume(args.resume)
    elif args.preview_augmentation:
        train.preview_augmentation(config_from_args(args))
    else:
        train.train(config_from_args(args))
    return 0


main = command_main(build_parser, _run,
                    interrupted_hint="run the same command again")


def _local_workers(args):
    """Start --local-workers N processes of this command with --strategy multiworker; they get
    the settings resolved here (a settings file) and one --run-dir, or --resume RUN_DIR. The
    decoded images' place is settled here, once, and a disk cache filled before they start
    (datasets.cache_for_workers)."""
    import json
    import tempfile
    from pathlib import Path

    from catsdogs import runs
    from catsdogs.training.distribute import run_local_workers
    from catsdogs.training.features import check_local_workers
    from catsdogs.training.train import resolve_config

    if args.local_workers < 2:
        raise CatsDogsError(f"bad value for --local-workers: expected 2 or more, received "
                            f"{args.local_workers}", fix="one worker is plain training: drop it")
    if args.resume:
        config = cfg.read_run_config(runs.existing_run_dir(args.resume) / runs.CONFIG_FILE)
        check_local_workers(config)
        _cache_once_for_workers(config)
        return run_local_workers(["--resume", args.resume], args.local_workers)
    config = config_from_args(args)
    resolved = resolve_config(config)
    check_local_workers(resolved)
    cache = _cache_once_for_workers(resolved)
    run_dir = config.run_dir or str(runs.default_run_dir(config.preset or "run"))
    settings = {**cfg.to_dict(config), "strategy": "multiworker", "run_dir": run_dir,
                "cache": cache}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "settings.json"
        path.write_text(json.dumps(settings))
        return run_local_workers(["--config", str(path)], args.local_workers)


def _cache_once_for_workers(config):
    """datasets.cache_for_workers, in the launcher alone: run again inside the workers' network
    namespace (distribute.run_local_workers), it finds the cache filled and its mode in the
    settings, and a second pass would only scan the folders, stat every file and take the
    cache's lock again."""
    from catsdogs.data.datasets import cache_for_workers
    from catsdogs.models.presets import preset_of
    from catsdogs.training.distribute import inside_private_network

    if inside_private_network():
        return config.cache
    return cache_for_workers(config, preset_of(config).image_size)


def _several_seeds(args):
    """--seeds N: N runs of these settings, their spread and their ensemble (seeds.py)."""
    from pathlib import Path

    from catsdogs import runs
    from catsdogs.training.seeds import SEEDS_FILE, summary_lines, train_seeds
    from catsdogs.training.train import resolve_config

    if args.seeds < 2:
        raise CatsDogsError(f"bad value for --seeds: expected an integer >= 2, received "
                            f"{args.seeds}", where="--seeds", fix="drop --seeds for one run")
    for flag, given in (("--resume", args.resume), ("--local-workers", args.local_workers),
                        ("--preview-augmentation", args.preview_augmentation)):
        if given:
            raise CatsDogsError(f"--seeds does not take {flag}", where=flag,
                                fix="a killed --seeds run continues with its own command and "
                                    "--run-dir")
    config = resolve_config(config_from_args(args))
    folder = Path(config.run_dir or runs.default_run_dir(f"{config.preset}-{args.seeds}seeds"))
    # a new or empty folder, or the same command's own (killed: its lock; finished: seeds.json)
    runs.check_output_folder(folder, "--run-dir", reads=config.data,
                             ours=(runs.LOCK_FILE, SEEDS_FILE))
    print("\n".join(summary_lines(train_seeds(config, args.seeds, folder))))
    print(f"Seeds: {folder / 'seeds.json'}")


def _cross_validate(args):
    """--folds K: K runs of these settings on the pooled images of --data (kfold.py)."""
    from pathlib import Path

    from catsdogs import runs
    from catsdogs.training.kfold import cross_validate
    from catsdogs.training.train import resolve_config

    if args.folds < 2:
        raise CatsDogsError(f"bad value for --folds: expected an integer >= 2, received "
                            f"{args.folds}", where="--folds", fix="drop --folds for one run")
    for flag, given, fix in (
            ("--resume", args.resume, "a killed --folds run continues with its own command "
                                      "and --run-dir"),
            ("--local-workers", args.local_workers, "the folds train one after another in "
                                                    "one process: drop it"),
            ("--preview-augmentation", args.preview_augmentation, "preview without --folds"),
            ("--seeds", args.seeds is not None, "--folds trains K runs already; for seeds, "
                                                "run --seeds N without --folds"),
            # each fold's held-out images validate it: a split of the rest would be ignored
            ("--val-split", getattr(args, "val_split", None) is not None,
             "drop it: each fold is validated on the images it holds out")):
        if given:
            raise CatsDogsError(f"--folds does not take {flag}", where=flag, fix=fix)
    config = resolve_config(config_from_args(args))
    if config.train_dir is not None or config.data is None:
        raise CatsDogsError("--folds pools the images of one --data folder", where="--folds",
                            fix="pass --data FOLDER (class sub-folders, or train/ and "
                                "validation/ of them; CIFAR-10 as such a folder of images)")
    for flag, given in (("--strategy multiworker", config.strategy == "multiworker"),
                        ("--teacher", config.teacher), ("--prune-from", config.prune_from)):
        if given:  # a teacher or a pruned run saw the held-out folds: the accuracy would flatter
            raise CatsDogsError(f"--folds does not take {flag}", where=flag,
                                fix="cross-validate a preset trained from scratch on one "
                                    "machine")
    folder = Path(config.run_dir or runs.default_run_dir(f"{config.preset}-{args.folds}fold"))
    hint = None if config.run_dir else f"the same command with --run-dir {folder}"
    runs.check_writable(folder)  # a folder the machine refuses: one line before any decoding
    result = cross_validate(config, config.data, args.folds, folder, continue_with=hint)
    print(result.summary_line())
    print(f"Folds: {folder / 'folds.json'}")
