"""Make a run's model narrower: remove its least important channels, then fine-tune.

    catsdogs prune runs/resnet-catsdogs-20261124-101500 --keep 0.5
    catsdogs prune RUN --keep 0.25 --epochs 5 --run-dir runs/quarter
    catsdogs prune RUN --keep 0.5 --distill             # fine-tune learning from the unpruned model
    catsdogs train --resume runs/quarter                # an interrupted one

Each convolution (and hidden Dense layer) keeps --keep of its channels, those with the largest
L1 norm (BatchNorm's scale folded in); layers joined by a residual Add keep the same channels.
The narrower model starts from the run's weights and fine-tunes whole, in one stage (two with
--fine-tune-epochs), on the run's data with its recipe, for a third of its epochs (both stages
of a run that had two) at a tenth of its learning rate unless flags say otherwise.
The run folder is a normal one; its config.json names the pruned run and --keep.
"""

import math

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.commands.distill import model_run, settings_from, training_command
from catsdogs.errors import CatsDogsError

# the pruned run's settings not taken over: the fine-tuning's own (a --width run is pruned at
# its own widths: the pruned model is its model, narrowed); nor how it started and staged
# (--weights, a second stage): the pruned model starts from its trained weights and fine-tunes
# whole, in one stage unless --fine-tune-epochs asks for two
NOT_INHERITED = ("run_dir", "teacher", "prune_from", "prune_keep", "epochs", "learning_rate",
                 "width", "weights", "fine_tune_epochs", "fine_tune_learning_rate", "unfreeze",
                 "cache_features")
# the network is the run's and its weights start it: no flags for those; they are prune's own
# whatever --config says (a copied run config.json names another run's)
NOT_FLAGS = ("preset", "image_size", "width", "weights", "teacher", "prune_from", "prune_keep")
FINE_TUNE_EPOCHS = 1 / 3  # of the pruned run's epochs (rounded up)
FINE_TUNE_RATE = 1 / 10  # of the pruned run's learning rate


def keep_flag(text):
    """--keep: a fraction of channels in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise CatsDogsError(f"bad value for --keep: expected a fraction of channels in (0, 1], "
                            f"e.g. 0.5, received {text!r}", fix="1 keeps every channel")
    return value


def build_parser():
    parser = cfg.command_parser("prune", __doc__)
    parser.add_argument("run", metavar="RUN", help="run folder whose model is pruned")
    parser.add_argument("--keep", type=keep_flag, required=True, metavar="FRACTION",
                        help="share of each prunable layer's channels kept, in (0, 1]")
    parser.add_argument("--distill", action="store_true",
                        help="fine-tune learning from the unpruned model too (its teacher)")
    parser.add_argument("--config", metavar="FILE.json", help="settings file; flags override it")
    cfg.add_flags(parser, cfg.TrainConfig, skip=NOT_FLAGS,
                  defaults={**{name: "the run's" for name in cfg.to_dict(cfg.TrainConfig())
                               if name not in NOT_INHERITED},
                            "epochs": "a third of the run's (both stages'), rounded up",
                            "learning_rate": "a tenth of the run's"})
    return parser


def config_from_args(args):
    """the run's settings, fine-tuning's epochs and rate <- --config file <- flags."""
    source_dir = model_run(args.run, "the run to prune")
    source = cfg.read_run_config(source_dir / runs.CONFIG_FILE)
    inherited = [key for key in cfg.to_dict(source) if key not in NOT_INHERITED]
    base = {"epochs": math.ceil(source.total_epochs * FINE_TUNE_EPOCHS),
            "learning_rate": source.learning_rate * FINE_TUNE_RATE}
    own = {"prune_from": str(source_dir), "prune_keep": args.keep, "weights": "none",
           "width": 1.0, "teacher": str(source_dir) if args.distill else None}
    return cfg.TrainConfig(**cfg.merge(base, settings_from(source, inherited, args), own))


main = training_command(build_parser, config_from_args)
