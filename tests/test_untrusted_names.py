"""What run folders, models and archives carry is input like any other: class names that would
be paths are refused wherever they enter, writes stay inside the folder the user named and
never replace a file, archives that would fill the disk are refused before a byte is written,
and doctor writes under runs/, not into the working folder."""

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs import runs
from catsdogs.commands.doctor import main as doctor_main
from catsdogs.commands.download import main as download_main
from catsdogs.commands.predict import main as predict_main
from catsdogs.data import archives
from catsdogs.errors import CatsDogsError
from catsdogs.inference.predict import Prediction, sort_into

from conftest import TWO_CLASSES, one_error_line, write_class_images
from test_hostile import add_file, sha256

BAD_NAMES = {  # the name refused -> the class names that carry it
    "../cats": ["../cats", "dogs"],
    "cats/big": ["cats/big", "dogs"],
    "cats\\big": ["cats\\big", "dogs"],
    "..": ["..", "dogs"],
    "": ["", "dogs"],
    "cats": ["cats", "cats"],  # twice
    "cats\nbig": ["cats\nbig", "dogs"],
}


def tree(folder):
    """Every path below `folder`, links included, as sorted relative strings."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


@pytest.fixture
def photos(tmp_path):
    return write_class_images(tmp_path / "photos", TWO_CLASSES, 2, size=(16, 16))


def fake_run(folder, names):
    """A run folder whose class_names.json holds `names`; its model file is never opened,
    because the names are read, and refused, first."""
    folder.mkdir(parents=True)
    (folder / runs.MODEL_FILE).write_bytes(b"not opened")
    (folder / runs.CLASS_NAMES_FILE).write_text(json.dumps(names))
    return folder


def assert_refused(line, name):
    assert f"refused class name {name!r}" in line, line


# ---------------------------------------------------------------- class names, by source


def test_the_reported_run_folder_is_refused_and_nothing_escapes(tmp_path, photos, capsys):
    run = fake_run(tmp_path / "a" / "b" / "run", ["../../escaped-cats", "../../escaped-dogs"])
    before = tree(tmp_path)
    line = one_error_line(capsys, predict_main,
                          [str(run), str(photos), "--sort-into", str(tmp_path / "a" / "b" / "out"
                                                                     / "inner")])
    assert_refused(line, "../../escaped-cats")
    assert str(run / runs.CLASS_NAMES_FILE) in line
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", BAD_NAMES)
def test_class_names_json_of_a_run_folder(name, tmp_path, photos, capsys):
    run = fake_run(tmp_path / "run", BAD_NAMES[name])
    before = tree(tmp_path)
    line = one_error_line(capsys, predict_main, [str(run), str(photos), "--sort-into",
                                                 str(tmp_path / "out"), "--explain",
                                                 str(tmp_path / "why")])
    assert_refused(line, name)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if "," not in n])
def test_class_names_flag(name, tmp_path, photos, capsys):
    model = tmp_path / "model.h5"
    model.write_bytes(b"not opened")
    before = tree(tmp_path)
    line = one_error_line(capsys, predict_main, [str(model), str(photos), "--class-names",
                                                 ",".join(BAD_NAMES[name]), "--sort-into",
                                                 str(tmp_path / "out")])
    assert_refused(line, name)
    assert "(--class-names)" in line
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", BAD_NAMES)
def test_class_names_file_given_to_the_flag(name, tmp_path, photos, capsys):
    model = tmp_path / "model.h5"
    model.write_bytes(b"not opened")
    names = tmp_path / "names.json"
    names.write_text(json.dumps(BAD_NAMES[name]))
    before = tree(tmp_path)
    line = one_error_line(capsys, predict_main, [str(model), str(photos), "--class-names",
                                                 str(names), "--sort-into", str(tmp_path / "out")])
    assert_refused(line, name)
    assert f"({names})" in line
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", BAD_NAMES)
def test_class_names_given_to_load(name, tmp_path):
    from catsdogs.inference.classifier import load

    model = tmp_path / "model.h5"
    model.write_bytes(b"not opened")
    with pytest.raises(CatsDogsError, match="refused class name"):
        load(model, class_names=BAD_NAMES[name])


@pytest.mark.parametrize("names", [["cats", "x" * (runs.MAX_CLASS_NAME + 1)],
                                   ["cats", "dogs\u202e"], ["cats", " "], "cats", ["cats", 2]])
def test_long_invisible_blank_and_non_list_names_are_refused(names):
    with pytest.raises(CatsDogsError, match="class name"):
        runs.check_class_names(names, "here")


def test_plain_names_pass_unchanged():
    names = ["cats", "dogs", "Golden Retriever", "chat-noir_2", "猫", "a.b"]
    assert runs.check_class_names(names, "here") == names


def test_a_data_folder_with_a_control_character_in_a_class_folder(tmp_path, capsys):
    from catsdogs.data.datasets import list_class_folders

    data = write_class_images(tmp_path / "data", {"cats\nbig": (1, 2, 3), "dogs": (4, 5, 6)}, 1)
    with pytest.raises(CatsDogsError, match=r"refused class name 'cats\\nbig'"):
        list_class_folders(data)


def test_a_savedmodel_carrying_bad_names(tmp_path, monkeypatch):
    """Refused when written, and, in a SavedModel made elsewhere, when its outputs are read."""
    import keras

    from catsdogs.inference import runtimes
    from catsdogs.inference.classifier import load
    from catsdogs.inference.saved_model import write_saved_model

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(CatsDogsError, match=r"refused class name '\.\./cats'"):
        write_saved_model(model, tmp_path / "refused", ["../cats", "dogs"])
    assert tree(tmp_path) == []
    with monkeypatch.context() as patched:  # a SavedModel from a program without the check
        patched.setattr(runs, "check_class_names", lambda names, where: list(names))
        write_saved_model(model, tmp_path / "elsewhere", ["../cats", "../dogs"])
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buffer, format="PNG")
    classify = runtimes.open_saved_model_bytes(tmp_path / "elsewhere")
    with pytest.raises(CatsDogsError, match="refused class name '../(cats|dogs)'.*class_name output"):
        classify([buffer.getvalue()])
    with pytest.raises(CatsDogsError, match=r"refused class name '\.\./cats'"):
        load(tmp_path / "elsewhere")  # its class_names.json


def test_a_savedmodels_reordered_names_beside_it_are_refused(tmp_path):
    """Its class_name output reads the names inside it; names beside it in another order would
    put another class's name on every prediction made here."""
    import keras

    from catsdogs.inference.classifier import load
    from catsdogs.inference.saved_model import write_saved_model

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 3),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    write_saved_model(model, tmp_path / "sm", ["cats", "dogs", "owls"])
    assert load(tmp_path / "sm").class_names == ["cats", "dogs", "owls"]
    (tmp_path / "sm" / runs.CLASS_NAMES_FILE).write_text(json.dumps(["dogs", "cats", "owls"]))
    with pytest.raises(CatsDogsError, match=r"differ from the SavedModel's own \['cats', 'dogs'"):
        load(tmp_path / "sm")


# ---------------------------------------------------------------- writes stay inside


def rows_for(paths, label):
    return [Prediction(str(p), label, 0.9, [(label, 0.9)]) for p in paths]


def test_sort_into_refuses_a_class_folder_linked_outside(tmp_path, photos):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "cats").symlink_to(outside, target_is_directory=True)
    rows = rows_for(sorted((photos / "dogs").iterdir()), "dogs") + rows_for(
        sorted((photos / "cats").iterdir()), "cats")
    with pytest.raises(CatsDogsError, match="outside the folder given"):
        sort_into(rows, out)
    assert tree(outside) == [] and tree(out) == ["cats"]  # dogs/ checked first, nothing copied


def test_sort_into_refuses_a_file_link_placed_in_a_class_folder(tmp_path, photos):
    source = sorted((photos / "cats").iterdir())[0]
    (tmp_path / "out" / "cats").mkdir(parents=True)
    (tmp_path / "out" / "cats" / source.name).symlink_to(tmp_path / "stolen.png")
    with pytest.raises(CatsDogsError, match="outside the folder given"):
        sort_into(rows_for([source], "cats"), tmp_path / "out")
    assert not (tmp_path / "stolen.png").exists()


def test_sort_into_refuses_names_that_would_leave_even_unchecked(tmp_path, photos):
    """The second guard alone: a class name that escaped the check is still refused."""
    out = tmp_path / "a" / "out"
    with pytest.raises(CatsDogsError, match="outside the folder given"):
        sort_into(rows_for(sorted((photos / "cats").iterdir()), "../../escaped"), out)
    assert not (tmp_path / "escaped").exists() and not out.exists()


def test_sort_into_never_replaces_a_file(tmp_path, photos):
    sources = sorted((photos / "cats").iterdir())
    (tmp_path / "out" / "cats").mkdir(parents=True)
    (tmp_path / "out" / "cats" / sources[0].name).write_bytes(b"mine")
    sort_into(rows_for([sources[0], sources[0]], "cats"), tmp_path / "out")
    folder = tmp_path / "out" / "cats"
    assert (folder / sources[0].name).read_bytes() == b"mine"
    copies = [folder / f"{sources[0].stem}-{i}{sources[0].suffix}" for i in (1, 2)]
    assert all(c.read_bytes() == sources[0].read_bytes() for c in copies)


def test_explain_overlays_stay_inside_and_never_replace(tmp_path):
    from catsdogs.inference.explain import write_overlays

    folder = tmp_path / "a" / "why"
    folder.mkdir(parents=True)
    (folder / "photo-cats.jpg").write_bytes(b"mine")
    pixels, heatmaps = np.zeros((1, 8, 8, 3)), np.ones((1, 2, 2))
    written = write_overlays(pixels, heatmaps, ["photo-cats"], folder)
    assert written == [folder / "photo-cats-1.jpg"] and Image.open(written[0]).format == "JPEG"
    assert (folder / "photo-cats.jpg").read_bytes() == b"mine"
    for name in ("x/../../name", str(tmp_path / "absolute")):
        with pytest.raises(CatsDogsError, match="outside the folder given"):
            write_overlays(pixels, heatmaps, [name], folder)
    assert tree(tmp_path / "a") == ["why", "why/photo-cats-1.jpg", "why/photo-cats.jpg"]
    assert not (tmp_path / "absolute.jpg").exists()


def test_a_new_file_appears_whole_or_not_at_all(tmp_path):
    """A write that dies half-way leaves neither a part-written file under the name nor its
    temporary file; a whole one gets the name."""
    def half_then_die(path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.write_new(tmp_path, "photo", ".jpg", half_then_die)
    assert tree(tmp_path) == []
    path = runs.write_new(tmp_path, "photo", ".jpg", lambda p: Path(p).write_bytes(b"whole"))
    assert path == tmp_path / "photo.jpg" and path.read_bytes() == b"whole"
    assert tree(tmp_path) == ["photo.jpg"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not mkstemp's 0600


def test_a_link_loop_at_a_name_is_refused_in_one_line(tmp_path):
    (tmp_path / "photo.jpg").symlink_to(tmp_path / "photo.jpg")
    with pytest.raises(CatsDogsError, match="outside the folder given"):
        runs.write_new(tmp_path, "photo", ".jpg", lambda p: Path(p).write_bytes(b"x"))
    assert tree(tmp_path) == ["photo.jpg"]


def test_a_long_name_is_cut_to_fit_the_filesystem(tmp_path):
    stem = "é" * 200  # 400 bytes in UTF-8
    first = runs.write_new(tmp_path, stem, "-cats.jpg", lambda p: Path(p).write_bytes(b"1"))
    second = runs.write_new(tmp_path, stem, "-cats.jpg", lambda p: Path(p).write_bytes(b"2"))
    for path, tail in ((first, "-cats.jpg"), (second, "-1-cats.jpg")):
        assert len(os.fsencode(path.name)) <= 255 and path.name.endswith(tail)
    assert first.read_bytes() == b"1" and second.read_bytes() == b"2"


def test_without_hard_links_a_new_file_still_never_replaces_one(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "photo.jpg").write_bytes(b"mine")
    path = runs.write_new(tmp_path, "photo", ".jpg", lambda p: Path(p).write_bytes(b"new"))
    assert path == tmp_path / "photo-1.jpg" and path.read_bytes() == b"new"
    assert (tmp_path / "photo.jpg").read_bytes() == b"mine"
    assert tree(tmp_path) == ["photo-1.jpg", "photo.jpg"]


def test_relabelling_keeps_a_photo_whose_new_name_is_taken(tmp_path):
    """`--fix-into --relabel`: a suspect moved into a class folder holding its name, and the
    `-from-<class>` name as well, is copied under a third name, not over either photo."""
    from types import SimpleNamespace

    from catsdogs.training.audit import LabelIssue, write_fixed_copy

    data = tmp_path / "data"
    names = {("cats", "x.jpg"): b"cat x", ("dogs", "x.jpg"): b"dog x",
             ("dogs", "x-from-cats.jpg"): b"dog x-from-cats"}
    paths = []
    for (label, name), content in names.items():
        (data / label).mkdir(parents=True, exist_ok=True)
        (data / label / name).write_bytes(content)
        paths.append(str(data / label / name))
    class Split(SimpleNamespace):
        def __len__(self):
            return len(self.paths)

    images = SimpleNamespace(split=Split(paths=paths, labels=[0, 1, 1]),
                             places=[("", "x.jpg"), ("", "x.jpg"), ("", "x-from-cats.jpg")],
                             class_names=["cats", "dogs"])
    audit = SimpleNamespace(images=images, issues=[LabelIssue(1, paths[0], "cats", "dogs", 0.1)])
    write_fixed_copy(audit, data, tmp_path / "fixed", relabel=True)
    dogs = tmp_path / "fixed" / "dogs"
    assert sorted(p.read_bytes() for p in dogs.iterdir()) == [b"cat x", b"dog x",
                                                              b"dog x-from-cats"]


# ---------------------------------------------------------------- archives and the disk


def write_archive(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            add_file(tar, name, data)
    return path


def random_bytes(size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def unpack(archive, into):
    return download_main(["--archive", str(archive), "--sha256", sha256(archive), "--into",
                          str(into)])


def fake_free_space(monkeypatch, free):
    usage = shutil.disk_usage(".")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=free))


def test_an_archive_larger_than_the_free_space_is_refused_before_extraction(
        tmp_path, monkeypatch, capsys):
    archive = write_archive(tmp_path / "data.tar.gz", {"cats/a.bin": random_bytes(300_000),
                                                       "dogs/b.bin": random_bytes(300_000, 1)})
    needed = 600_000 + 2 * archives.BLOCK + archives.FREE_MARGIN
    fake_free_space(monkeypatch, needed - 1)
    extracted = []
    monkeypatch.setattr(tarfile.TarFile, "extractall", lambda *a, **k: extracted.append(a))
    line = one_error_line(capsys, download_main, ["--archive", str(archive), "--sha256",
                                                  sha256(archive), "--into", str(tmp_path / "u")])
    assert "not enough disk space" in line and "2 members" in line
    assert not extracted and tree(tmp_path) == ["data.tar.gz"]
    monkeypatch.undo()
    fake_free_space(monkeypatch, needed)  # exactly enough: unpacked
    assert unpack(archive, tmp_path / "u") == 0
    assert tree(tmp_path / "u") == ["cats", "cats/a.bin", "dogs", "dogs/b.bin"]


def test_an_archive_expanding_past_the_ratio_is_refused(tmp_path, monkeypatch, capsys):
    archive = write_archive(tmp_path / "bomb.tar.gz", {"cats/zeros.bin": bytes(2_000_000)})
    monkeypatch.setattr(archives, "EXPANSION_CHECKED_FROM", 1_000_000)
    line = one_error_line(capsys, download_main, ["--archive", str(archive), "--sha256",
                                                  sha256(archive), "--into", str(tmp_path / "u")])
    assert "times its own size" in line and f"{archives.MAX_EXPANSION}x" in line
    assert tree(tmp_path) == ["bomb.tar.gz"]


def test_an_archive_with_too_many_members_is_refused(tmp_path, monkeypatch, capsys):
    archive = write_archive(tmp_path / "many.tar.gz", {f"cats/{i}.png": b"x" for i in range(5)})
    monkeypatch.setattr(archives, "MAX_MEMBERS", 3)
    line = one_error_line(capsys, download_main, ["--archive", str(archive), "--sha256",
                                                  sha256(archive), "--into", str(tmp_path / "u")])
    assert "'cats/3.png'" in line and "3 members" in line
    assert tree(tmp_path) == ["many.tar.gz"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_disk_filling_up_mid_extraction_is_one_line_and_leaves_nothing(
        code, tmp_path, monkeypatch, capsys):
    archive = write_archive(tmp_path / "data.tar", {f"cats/{i}.bin": random_bytes(1000, i)
                                                    for i in range(3)}, mode="w")
    original, calls = tarfile.copyfileobj, []

    def fill_the_disk(*args, **kwargs):  # the first file is written, the second finds no room
        calls.append(1)
        if len(calls) == 2:
            raise OSError(code, os.strerror(code))
        return original(*args, **kwargs)

    monkeypatch.setattr(tarfile, "copyfileobj", fill_the_disk)
    line = one_error_line(capsys, download_main, ["--archive", str(archive), "--sha256",
                                                  sha256(archive), "--into", str(tmp_path / "u")])
    assert "disk full while unpacking; nothing was kept" in line and len(calls) == 2
    assert tree(tmp_path) == ["data.tar"]


def test_extraction_never_removes_folders_it_did_not_make(tmp_path):
    archive = write_archive(tmp_path / "data.tar.gz", {"cats/a.png": b"a", "dogs/b.png": b"b"})
    for name in (".victim.tmp", ".victim.old", f".victim{runs.TEMP_TAG}x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mine.txt").write_text("keep")
    assert unpack(archive, tmp_path / "victim") == 0
    assert tree(tmp_path / "victim") == ["cats", "cats/a.png", "dogs", "dogs/b.png"]
    for name in (".victim.tmp", ".victim.old", f".victim{runs.TEMP_TAG}x"):
        assert (tmp_path / name / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".victim.old", ".victim.tmp", f".victim{runs.TEMP_TAG}x", "data.tar.gz", "victim"]


def test_replace_dir_puts_back_a_folder_set_aside_by_a_killed_swap(tmp_path, monkeypatch):
    target = tmp_path / "backup"
    runs.replace_dir(target, lambda temp: (temp.mkdir(), (temp / "v").write_text("1")))
    real_replace = os.replace

    def die_before_the_second_rename(source, destination):
        if Path(destination) == target:
            raise KeyboardInterrupt
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", die_before_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        runs.replace_dir(target, lambda temp: (temp.mkdir(), (temp / "v").write_text("2")))
    monkeypatch.undo()
    assert not target.exists()
    runs.recover_dir(target)
    assert (target / "v").read_text() == "1" and tree(tmp_path) == ["backup", "backup/v"]


def test_a_folder_half_written_by_a_killed_process_goes_with_the_next_write_of_its_name(
        tmp_path):
    target = tmp_path / "unpacked"
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys; from pathlib import Path; from catsdogs import runs\n"
        "def write(temp):\n"
        "    temp.mkdir(); (temp / 'half').write_bytes(bytes(1000))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "runs.replace_dir(Path(sys.argv[1]), write)\n"), str(target)])
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in tmp_path.glob(f"*{runs.TEMP_TAG}*/unpacked/half")] != []
    runs.replace_dir(target, lambda temp: (temp.mkdir(), (temp / "v").write_text("new")))
    assert tree(tmp_path) == ["unpacked", "unpacked/v"]


def test_a_write_in_progress_keeps_its_folder_while_another_write_of_the_name_starts(tmp_path):
    target = tmp_path / "backup"

    def outer(temp):
        temp.mkdir()
        (temp / "v").write_text("outer")
        runs.replace_dir(target, lambda inner: (inner.mkdir(), (inner / "v").write_text("inner")))
        assert (temp / "v").read_text() == "outer"  # the inner call found it held, not abandoned

    runs.replace_dir(target, outer)
    assert (target / "v").read_text() == "outer" and tree(tmp_path) == ["backup", "backup/v"]


# ---------------------------------------------------------------- doctor's reports


def test_doctor_writes_under_runs_of_the_working_folder_and_says_where(tmp_path, monkeypatch,
                                                                       capsys):
    data = write_class_images(tmp_path / "pets", TWO_CLASSES, 2, size=(16, 16))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert doctor_main([str(data)]) == 0
    (report,) = (elsewhere / "runs").glob("doctor-pets-*/doctor.json")
    assert tree(elsewhere) == ["runs", f"runs/{report.parent.name}",
                               f"runs/{report.parent.name}/doctor.json"]
    assert json.loads(report.read_text())["readable_images"] == 4
    assert f"Details: {report.relative_to(elsewhere)}" in capsys.readouterr().out


def test_doctor_out_dir_leaves_the_working_folder_alone(tmp_path, monkeypatch, capsys):
    data = write_class_images(tmp_path / "pets", TWO_CLASSES, 2, size=(16, 16))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert doctor_main([str(data), "--out-dir", str(tmp_path / "reports")]) == 0
    assert tree(elsewhere) == [] and tree(tmp_path / "reports") == ["doctor.json"]
    assert str(tmp_path / "reports" / "doctor.json") in capsys.readouterr().out


def test_the_label_audit_folder_is_under_runs_by_default(tmp_path):
    from catsdogs.training.audit import AuditConfig

    assert AuditConfig(data=str(tmp_path / "pets")).folder == Path("runs", "label-audit-pets")
    assert AuditConfig(data="x", out_dir=str(tmp_path / "a")).folder == tmp_path / "a"


# ---------------------------------------------------------------- reports never land on files


def test_doctors_report_never_replaces_a_file_or_lands_in_the_data(tmp_path, photos, capsys):
    photo = sorted(photos.rglob("*.png"))[0]
    before = photo.read_bytes()
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    for argv, said in (([str(photos), "--out", str(photo)], "--out would go inside the data it reads"),
                       ([str(photos), "--out", str(other)], "not a doctor report"),
                       ([str(photos), "--out", str(tmp_path)], "--out is a folder"),
                       ([str(photos), "--out", "r.json", "--out-dir", "d"], "both name"),
                       ([str(photos), "--out-dir", str(other)], "not a folder"),
                       ([str(photos), "--out-dir", str(photos)], "inside the data"),
                       ([str(photos), "--out-dir", str(tmp_path)], "not empty")):
        assert said in one_error_line(capsys, doctor_main, argv), argv
    assert photo.read_bytes() == before and json.loads(other.read_text()) == {"mine": 1}
    report = tmp_path / "report.json"
    for _ in range(2):  # its own earlier report is written over
        assert doctor_main([str(photos), "--out", str(report)]) == 0
    assert json.loads(report.read_text())["readable_images"] == 4


def test_evaluate_and_ensemble_write_no_report_over_a_run_the_data_or_a_file(tmp_path, photos,
                                                                             capsys):
    from catsdogs.commands.ensemble import main as ensemble_main
    from catsdogs.commands.evaluate import main as evaluate_main

    run = fake_run(tmp_path / "run", ["cats", "dogs"])
    (run / runs.CONFIG_FILE).write_text("{}")
    for out, said in ((run, "holds a training run"), (photos / "report", "inside the data")):
        line = one_error_line(capsys, evaluate_main, [str(run), str(photos), "--out", str(out)])
        assert said in line
    (tmp_path / "a-file").write_text("mine")
    line = one_error_line(capsys, ensemble_main, [str(run), str(run), "--out",
                                                  str(tmp_path / "a-file")])
    assert "not a folder" in line and (tmp_path / "a-file").read_text() == "mine"
    assert not (photos / "report").exists()


def test_train_and_serve_refuse_what_would_overwrite_or_open_up(tmp_path, photos, capsys):
    from catsdogs.commands.serve import main as serve_main
    from catsdogs.commands.train import main as train_main

    report = tmp_path / "eval-report"
    report.mkdir()
    (report / "metrics.json").write_text('{"accuracy": 0.9}')
    line = one_error_line(capsys, train_main, ["--data", str(photos), "--run-dir", str(report)])
    assert "not empty (it holds metrics.json)" in line
    assert (report / "metrics.json").read_text() == '{"accuracy": 0.9}'
    run = fake_run(tmp_path / "run", ["cats", "dogs"])
    line = one_error_line(capsys, serve_main, [str(run), "--api-key", ""])  # "$KEY", unset
    assert "--api-key" in line and "empty" in line


def test_a_malformed_sha256_is_refused_before_the_archive_is_read(tmp_path, capsys):
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"not read")
    line = one_error_line(capsys, download_main, ["--archive", str(archive), "--sha256", "xyz",
                                                  "--into", str(tmp_path / "out")])
    assert "bad value for --sha256: expected 64 hex digits" in line


def test_a_class_named_unknown_cannot_mix_with_the_photos_under_min_confidence():
    import types

    from catsdogs.inference.calibrate import rejection_threshold

    model = types.SimpleNamespace(class_names=["unknown", "dogs"], source=Path("run"),
                                  calibration={})
    with pytest.raises(CatsDogsError, match="named 'unknown'.*drop --min-confidence"):
        rejection_threshold(model, 0.8)
    model.class_names = ["cats", "dogs"]
    assert rejection_threshold(model, 0.8) == 0.8


@pytest.mark.parametrize("side", [None, 0, 100_000])
def test_a_model_of_no_or_absurd_input_size_is_one_line(side, tmp_path):
    import keras

    from catsdogs.inference.classifier import load

    model = keras.Sequential([keras.Input((side, side, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    model.save(tmp_path / "model.keras")
    (tmp_path / runs.CLASS_NAMES_FILE).write_text('["cats", "dogs"]')
    with pytest.raises(CatsDogsError, match=r"input size .* is not two sides from 1 to 4096"):
        load(tmp_path)


def test_nothing_a_command_writes_lands_in_the_photos_it_reads_or_over_a_users_file(
        tmp_path, photos, capsys):
    """A run, a sorted copy or an export inside the photos becomes a class of the next run;
    an export or a predictions file never replaces a file catsdogs did not write."""
    from catsdogs.commands.export import main as export_main
    from catsdogs.commands.predict import main as predict_main
    from catsdogs.commands.train import main as train_main

    run = fake_run(tmp_path / "run", ["cats", "dogs"])
    before = sorted(photos.rglob("*"))
    for main, argv, flag in (
            (train_main, ["--data", str(photos), "--run-dir", str(photos / "myrun")], "--run-dir"),
            (predict_main, [str(run), str(photos), "--sort-into", str(photos / "sorted")],
             "--sort-into"),
            (export_main, [str(run), "--format", "keras", "--out", str(photos / "exp"),
                           "--check", str(photos)], "--out")):
        line = one_error_line(capsys, main, argv)
        assert f"{flag} would go inside the data it reads" in line, line
    assert sorted(photos.rglob("*")) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.onnx").write_text("mine")
    line = one_error_line(capsys, export_main, [str(run), "--format", "onnx", "--out", str(mine)])
    assert "not empty (it holds model.onnx)" in line and (mine / "model.onnx").read_text() == "mine"
    csv_file = tmp_path / "mine.csv"
    csv_file.write_text("precious\n")
    line = one_error_line(capsys, predict_main, [str(run), str(photos), "--output", str(csv_file)])
    assert "not an earlier output of predict" in line and csv_file.read_text() == "precious\n"
    from catsdogs.inference.predict import is_predict_output

    csv_file.write_text("path,class,probability\nx.jpg,cats,0.9\n")
    json_file = tmp_path / "earlier.json"
    json_file.write_text('{"predictions": [], "skipped": []}')
    assert is_predict_output(csv_file) and is_predict_output(json_file)  # written over again
    json_file.write_text('{"predictions": []}')
    assert not is_predict_output(json_file)


def test_a_run_folder_given_as_photos_is_said_to_be_one(tmp_path, capsys):
    from catsdogs.commands.train import main as train_main

    run = fake_run(tmp_path / "run", ["cats", "dogs"])
    (run / runs.CONFIG_FILE).write_text("{}")
    (run / "exports").mkdir()
    line = one_error_line(capsys, train_main, ["--data", str(run)])
    assert "this is a catsdogs run folder, not photos" in line and "--resume" in line
