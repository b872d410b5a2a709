"""Search a preset's recipe on your own photos (KerasTuner), choosing on a selection split.

    catsdogs tune --data my_photos --preset fast-catsdogs --budget 60
    catsdogs tune --data my_photos --trials 20 --search random --space tune.json
    catsdogs tune --data my_photos --budget 30 --final 30     # then the best recipe, 30 minutes
    catsdogs train --config runs/tune-fast-catsdogs-<time>/best.json --data my_photos

Each trial is a run folder, TUNE_DIR/trial-<id>/, scored on its selection split; the test
split is read once, for the best trial. A killed search continues with the same command and
--run-dir TUNE_DIR. Settings given as flags (or in --config) are fixed, not searched.
"""

from catsdogs import config as cfg
from catsdogs.errors import CatsDogsError, command_main

SKIP = ("refit", "refit_union", "teacher", "prune_from", "prune_keep", "distill_temperature",
        "distill_alpha")  # not a search's settings
# shared settings that mean something else here (the search's folder; its selection split)
HELPS = {"run_dir": "(folder) the search's folder: a run folder per trial, tune.json, best.json; "
                    "default: runs/tune-<preset>-<time>",
         "selection_split": "(fraction) carve this share of each class's training images to "
                            "score the trials on; the validation split is then a test split, "
                            f"read once for the best trial [default: {cfg.SELECTION_SPLIT}; a "
                            "search always chooses on a selection split]"}


def build_parser():
    parser = cfg.command_parser("tune", __doc__)
    search = parser.add_argument_group("search")
    search.add_argument("--budget", type=float, metavar="MINUTES",
                        help="stop after this many minutes (a killed search's time counts): "
                             "no trial starts after it, the running one ends its epoch (give "
                             "--budget, --trials or both)")
    search.add_argument("--trials", type=int, metavar="N",
                        help="stop after N trials (give --budget, --trials or both)")
    search.add_argument("--search", choices=cfg.SEARCHES, default="bayesian",
                        help="KerasTuner's oracle: Bayesian optimisation, random search, or "
                             "Hyperband (which sets each trial's --epochs) [default: bayesian]")
    search.add_argument("--space", metavar="FILE.json",
                        help="ranges that replace the declared ones: {\"learning_rate\": "
                             "[\"log\", 1e-4, 1e-2], \"mixup\": null, \"batch_size\": 64} "
                             "(null: not searched; a value: fixed)")
    search.add_argument("--ensemble", type=int, metavar="K", default=0,
                        help="also combine the best K trials into TUNE_DIR/ensemble/")
    search.add_argument("--final", type=float, metavar="MINUTES",
                        help="then train the best recipe again in TUNE_DIR/final/ for as many "
                             "epochs as fit in MINUTES at its trial's speed (beyond --budget); "
                             "the test split is read for that model")
    search.add_argument("--config", metavar="FILE.json",
                        help="settings every trial starts from; flags override it")
    cfg.add_flags(parser, cfg.TrainConfig, skip=SKIP, helps=HELPS)
    return parser


def _run(args):
    from pathlib import Path

    from catsdogs import runs

    if args.budget is None and args.trials is None:
        raise CatsDogsError("a search needs --budget MINUTES or --trials N",
                            fix="e.g. --budget 60")
    if args.budget is not None and not args.budget > 0:
        raise CatsDogsError(f"bad value for --budget: expected minutes > 0, received {args.budget}")
    if args.trials is not None and args.trials < 1:
        raise CatsDogsError(f"bad value for --trials: expected an integer >= 1, received "
                            f"{args.trials}")
    if args.final is not None and not args.final > 0:
        raise CatsDogsError(f"bad value for --final: expected minutes > 0, received {args.final}")
    if args.ensemble == 1 or args.ensemble < 0:
        raise CatsDogsError(f"bad value for --ensemble: expected 2 or more trials, received "
                            f"{args.ensemble}", fix="drop --ensemble for the best trial alone")
    if args.trials is not None and args.ensemble > args.trials:
        raise CatsDogsError(f"--ensemble {args.ensemble} is more trials than --trials "
                            f"{args.trials} runs", fix="give --ensemble at most --trials")
    overrides = cfg.load_json(args.space) if args.space else {}
    if not isinstance(overrides, dict):
        raise CatsDogsError("a --space file must be a JSON object of settings", where=args.space)
    from catsdogs.commands.train import config_from_args  # Keras: after the flags are checked
    from catsdogs.models.presets import get_preset
    from catsdogs.training import space, tune
    from catsdogs.training.train import resolve_config

    given = cfg.merge(cfg.read_settings_file(args.config) if args.config else {},
                      cfg.given_flags(args, cfg.TrainConfig))
    # typed as a flag (a copied run config.json holds 0 too: it is replaced below)
    if cfg.given_flags(args, cfg.TrainConfig).get("selection_split") == 0:
        raise CatsDogsError("tune scores its trials on a selection split: with none, they would "
                            "be chosen on the test photos", where="--selection-split 0",
                            fix="drop it (15 % of the training photos), or give a share such as "
                                "0.2")
    base = config_from_args(args)
    if not base.selection_split:
        base = cfg.TrainConfig(**{**cfg.to_dict(base), "selection_split": cfg.SELECTION_SPLIT})
    # the selection split chooses the trial: the temperature's photos are set aside from it
    base = resolve_config(cfg.TrainConfig(**{**cfg.to_dict(base), "selection_chooses_runs": True}))
    fixed = set(given) | set(given.get("augment", {}))
    ranges = space.preset_ranges(base, get_preset(base.preset), fixed, overrides,
                                 source=args.space or "--space")
    if min(ranges.get("selection_split", ("fixed", 1))[1:]) <= 0:
        raise CatsDogsError("a search space whose selection_split can be 0 would choose trials "
                            "on the test photos", where=args.space,
                            fix="give selection_split a share > 0, or leave it out")
    folder = Path(base.run_dir or runs.default_run_dir(f"tune-{base.preset}"))
    # a new or empty folder, or a search's own (killed: its lock; finished: its files)
    runs.check_output_folder(folder, "--run-dir", reads=base.data, ours=(
        runs.LOCK_FILE, tune.TUNE_FILE, tune.TRIALS_FILE, tune.BEST_FILE))
    print(f"Tune folder: {folder}  (killed? the same command with --run-dir {folder} "
          "continues it)")
    plan = tune.Search(base, ranges, folder, args.search, args.trials, args.budget, args.ensemble,
                       args.final)
    print("\n".join(tune.summary_lines(tune.tune(plan))))
    return 0


main = command_main(build_parser, _run,
                    interrupted_hint="continue with the same command and --run-dir TUNE_DIR")
