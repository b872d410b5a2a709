"""Train a smaller student preset from a finished run (the teacher): knowledge distillation.

    catsdogs distill runs/resnet-catsdogs-20261124-101500                 # fast-catsdogs student
    catsdogs distill runs/air-cifar10-20261124-101500 --preset seed-cifar10 --epochs 10
    catsdogs distill TEACHER_RUN --distill-temperature 4 --distill-alpha 0.9
    catsdogs train --resume runs/fast-catsdogs-20261124-120000          # an interrupted one

The student trains on the teacher's data and split (its --data or --train-dir/--val-dir, split
fractions and --seed; flags override them), read as the teacher's were (its --cache and
--cache-dir: a disk cache is not decoded again), with the student preset's recipe; the loss
mixes the labels with the teacher's softened predictions on the same augmented batch. The run
folder is a normal one (model.keras is the student alone); its config.json names the teacher and the
distillation settings. Default student: fast-catsdogs (folders) or fast-cifar10 (CIFAR-10).
"""

from pathlib import Path

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.commands.common import check_val_split_used
from catsdogs.errors import CatsDogsError, command_main

# what a student takes from its teacher's config.json unless told otherwise: the same images,
# split the same way, so no image the teacher trained on is a validation image of the student,
# and read from where the teacher's were (its disk cache: nothing is decoded again)
TEACHER_DATA = ("dataset", "data", "train_dir", "val_dir", "val_split", "selection_split", "seed",
                "split_seed", "cache", "cache_dir")
DATA_SOURCES = ("data", "train_dir", "val_dir")  # given any of them, the run's are dropped
DEFAULT_STUDENT = {"folder": "fast-catsdogs", "cifar10": "fast-cifar10"}


def build_parser():
    parser = cfg.command_parser("distill", __doc__)
    parser.add_argument("teacher_run", metavar="TEACHER_RUN", help="run folder of the teacher")
    parser.add_argument("--config", metavar="FILE.json", help="settings file; flags override it")
    # a distilling run trains in one stage, on unmixed images (config.py refuses the rest)
    cfg.add_flags(parser, cfg.TrainConfig, skip=("teacher", "prune_from", "prune_keep",
                                                 "fine_tune_epochs", "fine_tune_learning_rate",
                                                 "unfreeze", "cache_features", "mixup",
                                                 "cutmix"),
                  defaults=dict.fromkeys(TEACHER_DATA, "the teacher's"),
                  helps={"preset": "(name) the student's preset, see catsdogs train "
                                   "--list-presets; default: " + " or ".join(
                                       f"{name} ({dataset} data)"
                                       for dataset, name in DEFAULT_STUDENT.items())})
    return parser


def model_run(run_dir, role):
    """`run_dir` resolved, if it holds a run with a model (config.json, model.keras and
    class_names.json); checked before TensorFlow loads."""
    path = Path(run_dir)
    for name in (runs.CONFIG_FILE, runs.MODEL_FILE, runs.CLASS_NAMES_FILE):
        if not (path / name).is_file():
            raise CatsDogsError(f"{role} has no {name}", where=path,
                                fix="pass a run folder that catsdogs train wrote")
    return path.resolve()


def settings_from(run_config, keys, args):
    """`keys` of a run's TrainConfig as defaults, under --config and the flags given; another
    data source given drops the run's."""
    given = cfg.merge(cfg.read_settings_file(args.config) if args.config else {},
                      cfg.given_flags(args, cfg.TrainConfig))
    run_settings = cfg.to_dict(run_config)
    base = {key: run_settings[key] for key in keys}
    if set(DATA_SOURCES) & set(given):
        base = {key: value for key, value in base.items() if key not in DATA_SOURCES}
    return cfg.merge(base, given)


def config_from_args(args):
    """teacher's data <- student preset's recipe <- --config file <- flags, as a TrainConfig."""
    from catsdogs.models.presets import get_preset

    teacher_dir = model_run(args.teacher_run, "the teacher run")
    teacher = cfg.read_run_config(teacher_dir / runs.CONFIG_FILE)
    settings = settings_from(teacher, TEACHER_DATA, args)
    preset = get_preset(settings.get("preset") or DEFAULT_STUDENT[settings["dataset"]])
    base = {"preset": preset.name, "augment": cfg.to_dict(preset.recipe.augment)}
    own = {"teacher": str(teacher_dir)}  # whatever --config says (a run's config.json: null)
    return cfg.TrainConfig(**cfg.merge(base, settings, own))


def training_command(build_parser, config_from_args):
    """The main() of a command that trains a run with the TrainConfig `config_from_args(args)`
    makes (distill, prune): settings and paths checked first, then TensorFlow loads."""
    def body(args):
        config = config_from_args(args)
        if getattr(args, "val_split", None) is not None:  # flags not typed are absent
            check_val_split_used(config)
        from catsdogs.training import train

        train.train(config)
        return 0

    return command_main(build_parser, body,
                        interrupted_hint="run the same command again")


main = training_command(build_parser, config_from_args)
