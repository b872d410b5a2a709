"""What a run's photos.json says of the photos a command is about to measure or fit on: did
they train the model, or choose its epoch? Figures on such photos read high, so evaluate and
calibrate say so."""

import os
from pathlib import Path

from catsdogs import runs
from catsdogs.config import load_json
from catsdogs.console import log
from catsdogs.errors import CatsDogsError

USED_ROLES = {"trained_on": "trained it", "chose_the_model": "chose its epoch"}  # photos.json
FITTED_FILES = "fitted_files"  # calibration.json: the photos `catsdogs calibrate` fitted T on


def photos_the_model_used(source, paths):
    """{role: count} of `paths` that trained the model at `source` or chose its epoch, by its
    run folder's photos.json; {} where it records none (an export, older runs and ensembles)."""
    return _counts_in_roles(source, paths, USED_ROLES)


def _counts_in_roles(source, paths, roles):
    """{role: count} of `paths` that the run at `source` lists for each of `roles` (those
    with none left out), by its photos.json; {} where it records none."""
    asked = {os.path.realpath(path) for path in paths}
    return {role: count for role, files in _used_files(source, roles).items()
            if (count := len(asked & files))}


def used_by_the_model(source, paths):
    """Whether each of `paths` trained the model at `source` or chose its epoch (bools, in
    order), by its run folder's photos.json; all False where it records none."""
    used = set().union(*_used_files(source).values())
    return [os.path.realpath(path) in used for path in paths]


def _used_files(source, roles=USED_ROLES):
    """{role: real paths} of `roles` in the photos.json of the run at `source`; {} where
    there is none (a model built in this process, an export, an older run or ensemble)."""
    if source is None:
        return {}
    photos_file = _run_folder(source) / runs.PHOTOS_FILE
    if not photos_file.exists():
        return {}
    recorded = _readable(photos_file)
    if recorded is None:
        return {}
    return {role: set(map(os.path.realpath, role_files(recorded, role))) for role in roles}


def _run_folder(source):
    """The run folder of a model's `source` (the folder, or the model file in it)."""
    return Path(source) if Path(source).is_dir() else Path(source).parent


def _readable(record_file):
    """A run's JSON record, or None with a line saying it cannot be read."""
    try:
        return load_json(record_file)
    except (CatsDogsError, OSError):
        log().warning(f"{record_file} cannot be read, so which photos the model used is not "
                      "known")
        return None


class PhotosChanged(CatsDogsError):
    """The photos a run reads again are not those it started with (check_same_photos)."""


def check_same_photos(run_dir, roles, fix):
    """A run read again (resumed, calibrated) must cut the splits it cut before. The cut is
    seeded over the sorted files, so a folder that gained or lost photos deals them out anew
    (one photo more in a class of 1,000 swaps most of its selection share with training
    photos): the epoch would be chosen, or the temperature fitted, on photos the model trained
    on. `roles` (photos.json's shape) is compared with the run's photos.json, role by role;
    roles it does not record (older versions) and runs without one are not checked.

    Raises:
        PhotosChanged: a role's photos differ, naming how many and one of them.
    """
    photos_file = Path(run_dir) / runs.PHOTOS_FILE
    if not photos_file.is_file():
        return
    before = load_json(photos_file)
    if not isinstance(before, dict):
        return
    for role in roles:
        if role not in before:
            continue
        moved = sorted(set(role_files(before, role)) ^ set(role_files(roles, role)))
        if moved:
            raise PhotosChanged(
                f"the photos differ from those the run started with: {len(moved)} of its "
                f"{role} photos are new or gone (e.g. {moved[0]}), so its splits would be cut "
                "anew", where=photos_file, fix=fix)


def role_files(roles, role):
    """The files photos.json (`roles`, as read) lists for `role`; [] where it lists none."""
    record = roles.get(role) if isinstance(roles, dict) else None
    files = record.get("files") if isinstance(record, dict) else None
    return [path for path in files if isinstance(path, str)] if isinstance(files, list) else []


def warn_if_the_model_used(source, paths, metrics=None):
    """Say so, in one line, when photos being measured or fitted on trained the model or
    chose its epoch: its accuracy on them reads high (and a temperature fitted on them comes
    out too sharp). Recorded in `metrics` ("photos_the_model_used") when given."""
    used = photos_the_model_used(source, paths)
    if used:
        said = " and ".join(f"{count} {USED_ROLES[role]}" for role, count in used.items())
        log().warning(f"of these {len(paths)} photos, {said} (its run's {runs.PHOTOS_FILE}): "
                      "figures on them read high; measure on photos the model never saw (a run "
                      "trained with --selection-split reports its test_accuracy on such "
                      "photos)")
    if metrics is not None:
        metrics["photos_the_model_used"] = used
    return used


def warn_if_they_fitted_the_temperature(source, paths, metrics=None):
    """Say so, in one line, when photos being measured fitted the model's temperature: its
    calibration error on them reads low (T was chosen to fit them). Recorded in `metrics`
    ("photos_that_fitted_the_temperature") when given. The photos are those calibration.json
    lists when `catsdogs calibrate RUN DATA` fitted it, else photos.json's."""
    fitted, said_by = _fitted_files(source) if source is not None else (set(), None)
    count = len(fitted & {os.path.realpath(path) for path in paths})
    if count:
        log().warning(f"of these {len(paths)} photos, {count} fitted the model's temperature "
                      f"(its run's {said_by}): the calibration error after it reads low on them")
    if metrics is not None:
        metrics["photos_that_fitted_the_temperature"] = count
    return count


def _fitted_files(source):
    """(real paths of the photos that fitted the temperature of the model at `source`, the
    file that says so): calibration.json's `fitted_files` where `catsdogs calibrate` wrote
    them, else photos.json's role."""
    calibration = _run_folder(source) / runs.CALIBRATION_FILE
    record = _readable(calibration) if calibration.is_file() else None
    if isinstance(record, dict) and isinstance(record.get(FITTED_FILES), list):
        return ({os.path.realpath(path) for path in record[FITTED_FILES] if isinstance(path, str)},
                runs.CALIBRATION_FILE)
    role = "fitted_the_temperature"
    return _used_files(source, (role,)).get(role, set()), runs.PHOTOS_FILE


def photos_in_role(source, paths, role):
    """How many of `paths` the run at `source` lists for `role` in its photos.json."""
    return _counts_in_roles(source, paths, (role,)).get(role, 0)


HELD_OUT_ROLES = ("chose_the_model", "monitored_only", "fitted_the_temperature", "tested_once")


def warn_if_the_start_trained_on_held_out(start, roles):
    """Say so, in one line, when a run that starts from another (`start`: the run it prunes,
    its teacher, its --weights run folder) holds out photos that run trained on: a split cut
    with other settings (--seed, --val-split) deals them anew, and the new run's epoch choice,
    temperature and test figures on them read high. Returns the count."""
    held_out = [path for role in HELD_OUT_ROLES for path in role_files(roles, role)]
    count = photos_in_role(start, held_out, "trained_on") if start else 0
    if count:
        log().warning(f"warning: {count} of this run's held-out photos trained the model it "
                      f"starts from ({start}): its figures on them read high; keep that run's "
                      "split settings (--seed, --val-split, --selection-split) or its data")
    return count
