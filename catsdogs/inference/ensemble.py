"""One model from several runs: the mean of their calibrated probabilities.

Runs that differ only by seed (or k-fold's folds) disagree on the photos they are unsure of;
averaging their probabilities is the most reliable way to gain accuracy after training, and
the mean of calibrated members stays calibrated. The ensemble is an ordinary Keras model
(one input, every member as a nested model with its temperature inside, Keras' `Average`
layer), saved as model.keras beside class_names.json, so predict, evaluate, calibrate, serve
and every export take it as they take one run.

The mean of calibrated members is not itself calibrated: averaging pulls probabilities towards
the middle where members disagree, so an ensemble of well-calibrated runs is under-confident
(Wu and Gales, 2021, "Should ensemble members be calibrated?"). When every member held out the
same photos to fit its temperature, and none trained or chose its epoch on them (what
`train --seeds` does: one split seed for every member), the ensemble fits a temperature of its
own on those photos, by the rules a run follows (calibrate.checked_temperature). Otherwise it
keeps T = 1 and says why in calibration.json.

    catsdogs ensemble runs/a runs/b runs/c --out runs/ensemble-abc
"""

import contextlib
import shutil
from pathlib import Path

from catsdogs import runs
from catsdogs.config import load_json
from catsdogs.errors import CatsDogsError
from catsdogs.inference.photo_roles import USED_ROLES, PhotosChanged, role_files

ENSEMBLE_FILE = "ensemble.json"  # the members, their temperatures and classes


def load_members(run_dirs):
    """The Classifiers of `run_dirs`, checked to share class names and input size."""
    from catsdogs.inference.classifier import load

    if len(run_dirs) < 2:
        raise CatsDogsError("an ensemble needs at least two runs", where="RUN",
                            fix="name two or more run folders")
    resolved = [Path(path).resolve() for path in run_dirs]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:  # twice the same model is one member weighted double
            raise CatsDogsError("the same run is named twice", where=run_dirs[index],
                                fix="name each member once")
    members = [load(runs.existing_run_dir(path)) for path in run_dirs]
    first = members[0]
    for path, member in zip(run_dirs, members):
        if member.model is None:
            raise CatsDogsError("an ensemble member must be a Keras model", where=path,
                                fix="name run folders (their model.keras)")
        if member.class_names != first.class_names:
            raise CatsDogsError(f"classes {member.class_names} differ from {first.class_names} "
                                f"of {run_dirs[0]}", where=path,
                                fix="combine runs trained on the same classes")
        if tuple(member.image_size) != tuple(first.image_size):
            raise CatsDogsError(f"input size {member.image_size} differs from "
                                f"{first.image_size} of {run_dirs[0]}", where=path,
                                fix="combine runs of presets (and --image-size) with the same "
                                    "image size")
    return members


def build_ensemble(members):
    """A Keras model whose output is the mean of the members' calibrated probabilities (one
    sigmoid column for binary members, as each member gives)."""
    import keras

    from catsdogs.inference.calibrate import with_temperature

    height, width = members[0].image_size
    inputs = keras.Input((height, width, 3), name="pixels")
    outputs = []
    for index, member in enumerate(members):
        calibrated = with_temperature(member.model, member.temperature)
        # a nested model per member: its layers keep their names inside their own scope
        nested = keras.Model(calibrated.inputs, calibrated.output, name=f"member_{index}")
        outputs.append(nested(inputs))
    mean = keras.layers.Average(name="mean_probability")(outputs)
    return keras.Model(inputs, mean, name="ensemble")


def shared_held_out_photos(run_dirs):
    """The photos every member set aside to fit its temperature, when they are the same for all
    and no member trained or chose its epoch on any of them; else (None, why not)."""
    held, used = None, set()
    for path in run_dirs:
        roles_file = Path(path) / runs.PHOTOS_FILE
        if not roles_file.is_file():
            return None, f"{path} records no photo roles ({runs.PHOTOS_FILE}; an older run)"
        roles = load_json(roles_file)
        if not isinstance(roles, dict):
            return None, f"{roles_file} is not a record of photo roles"
        fitted = role_files(roles, "fitted_the_temperature")
        if not fitted:
            return None, f"{path} set no photos aside to fit a temperature on"
        if held is None:
            held = fitted
        elif sorted(fitted) != sorted(held):
            return None, ("the members set different photos aside (other split seeds, or "
                          "k-fold's folds), so some trained on the others' held-out photos")
        for role in USED_ROLES:
            used.update(role_files(roles, role))
    if used.intersection(held):
        return None, "a member trained or chose its epoch on photos another held out"
    return held, None


def _calibrate(out, model, members, run_dirs, class_names):
    """The ensemble's own temperature (calibration.json, saved_model/ with it inside); returns
    the photos it was fitted on ([] for none)."""
    from catsdogs.inference.calibrate import calibrate_run, held_out_photos

    held, why_not = shared_held_out_photos(run_dirs)
    if held is not None:
        try:  # the photos are split again from the data folder, as photos.json says they were
            split, labels, source = held_out_photos(run_dirs[0], members[0])
            calibrate_run(out, model, split.pixel_view(), labels, class_names,
                          f"{source}, held out by every member")
            return held
        except PhotosChanged:  # changed since, the split moves
            why_not = ("the data folder changed since the members trained, so their held-out "
                       "photos cannot be found again as they were")
    calibrate_run(out, model, None, None, class_names, None,
                  why_none=f"kept T = 1: {why_not}; catsdogs calibrate ENSEMBLE DATA fits one "
                           "on photos no member saw")
    return []


MEMBER_ROLES = (*USED_ROLES, "tested_once")  # what an ensemble inherits of its members' roles


def ensemble_photo_roles(run_dirs, fitted):
    """The ensemble's photos.json: every photo a member trained on or chose its epoch on (the
    ensemble holds them all), the members' test photos, and `fitted`, those its temperature
    was fitted on; so evaluate says when its photos trained a member, and `calibrate ENSEMBLE
    DATA` fits only on photos no member used. None where a member records no roles (an older
    run): a partial record would pass photos that member trained on for unseen ones."""
    roles = {role: set() for role in MEMBER_ROLES}
    for path in run_dirs:
        roles_file = Path(path) / runs.PHOTOS_FILE
        recorded = load_json(roles_file) if roles_file.is_file() else None
        if not isinstance(recorded, dict):
            return None
        for role, files in roles.items():
            files.update(role_files(recorded, role))
    roles["fitted_the_temperature"] = set(fitted)
    return {role: {"source": f"the members' ({len(run_dirs)})", "count": len(files),
                   "files": sorted(files)} if files else None for role, files in roles.items()}


def _member_names(run_dirs):
    """The members as ensemble.json records them (ensemble_of compares them so)."""
    return [str(Path(path)) for path in run_dirs]


def write_ensemble(run_dirs, out):
    """Write the ensemble of `run_dirs` into the folder `out`: model.keras, class_names.json,
    ensemble.json, calibration.json, saved_model/ (with the ensemble's own temperature, or 1:
    see the module docstring) and photos.json (ensemble_photo_roles).

    Returns:
        Path: the folder.
    """
    members = load_members(run_dirs)
    out = Path(out)
    if (out / runs.MODEL_FILE).exists():
        raise CatsDogsError("the folder already holds a model", where=out,
                            fix="name a new folder with --out")
    model = build_ensemble(members)
    class_names = members[0].class_names
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        runs.write_json(out / runs.CLASS_NAMES_FILE, class_names)
        runs.write_json(out / ENSEMBLE_FILE, {
            "members": _member_names(run_dirs),
            "temperatures": [member.temperature for member in members],
            "class_names": class_names, "image_size": list(members[0].image_size)})
        roles = ensemble_photo_roles(run_dirs, _calibrate(out, model, members, run_dirs,
                                                          class_names))
        if roles is not None:
            runs.write_json(out / runs.PHOTOS_FILE, roles)
        with runs.atomic_path(out / runs.MODEL_FILE) as temp:  # last: its presence means done
            model.save(temp)
    except BaseException:
        if created:  # a folder this call made holds nothing of the user's
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def ensemble_of(run_dirs, out):
    """The ensemble of `run_dirs` in the folder `out`, which a command keeps for itself (a
    search's, `train --seeds`'s): kept when it holds these members already, else written
    again in one swap (runs.replace_dir), so a rerun with more trials or seeds, or a kill
    mid-write, never leaves an ensemble of other members under the name.

    Returns:
        Path: the folder.
    """
    out = Path(out)
    members = _member_names(run_dirs)
    record = out / ENSEMBLE_FILE
    # one written before ensembles recorded photo roles is written again, where its members do
    recorded = (out / runs.PHOTOS_FILE).exists() or ensemble_photo_roles(run_dirs, []) is None
    if (out / runs.MODEL_FILE).exists() and record.exists() and recorded:
        with contextlib.suppress(CatsDogsError):  # damaged: written again
            kept = load_json(record)
            if isinstance(kept, dict) and kept.get("members") == members:
                return out
    runs.replace_dir(out, lambda temp: write_ensemble(run_dirs, temp))
    return out

