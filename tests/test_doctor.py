"""doctor finds exactly what was planted: a corrupt file, duplicates, leakage, imbalance."""

import hashlib
import os
import shutil

import numpy as np
from PIL import Image

from catsdogs.commands.doctor import main
from catsdogs.data.doctor import diagnose, fix_into, quick_warnings
from conftest import Interrupt, one_error_line


def smooth_image(seed, size=64):
    """Low-frequency colour blobs: distinct images stay far apart in perceptual hash."""
    coarse = np.random.default_rng(seed).integers(0, 255, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)


def planted(root):
    counts = {("train", "cats"): 8, ("train", "dogs"): 3, ("validation", "cats"): 3,
              ("validation", "dogs"): 3}
    seed = 0
    for (split, label), count in counts.items():
        (root / split / label).mkdir(parents=True)
        for i in range(count):
            seed += 1
            smooth_image(seed).save(root / split / label / f"{label}_{i}.png")
    train_cats, val_dogs = root / "train" / "cats", root / "validation" / "dogs"
    shutil.copy(train_cats / "cats_0.png", train_cats / "copy.png")           # exact duplicate
    shutil.copy(root / "train" / "dogs" / "dogs_1.png", val_dogs / "leak.png")  # leakage
    (train_cats / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")    # corrupt
    with Image.open(train_cats / "cats_2.png") as image:                       # near-duplicate
        image.resize((58, 58)).save(train_cats / "cats_2_small.jpg", quality=92)
    return root


def test_doctor_finds_exactly_what_was_planted(tmp_path):
    root = planted(tmp_path / "pets")
    report = diagnose(root)
    name = lambda path: path.split("/")[-1]
    assert [name(u["path"]) for u in report["unreadable"]] == ["broken.jpg"]
    assert sorted(sorted(map(name, g)) for g in report["exact_duplicates"]) == [
        ["cats_0.png", "copy.png"], ["dogs_1.png", "leak.png"]]
    assert [sorted(map(name, g)) for g in report["leakage"]] == [["dogs_1.png", "leak.png"]]
    assert [sorted(map(name, n["paths"])) for n in report["near_duplicates"]] == [
        ["cats_2.png", "cats_2_small.jpg"]]
    assert report["counts"]["train"] == {"cats": 10, "dogs": 3}
    assert set(report["imbalance"]) == {"train"}  # 10 vs 3; validation is 3 vs 4
    assert report["tiny_images"] == [] and report["cmyk"] == 0


def test_fix_into_writes_a_clean_copy_and_never_touches_the_original(tmp_path, capsys):
    root = planted(tmp_path / "pets")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}
    code = main([str(root), "--out", str(tmp_path / "doctor.json"), "--fix-into", str(tmp_path / "clean")])
    assert code == 0
    assert "leakage" in capsys.readouterr().out
    clean = {p.name for p in (tmp_path / "clean").rglob("*") if p.is_file()}
    assert not {"broken.jpg", "copy.png", "leak.png"} & clean
    assert {"cats_0.png", "dogs_1.png", "cats_2.png"} <= clean
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()} == before
    assert (tmp_path / "doctor.json").is_file()
    remaining = diagnose(tmp_path / "clean")
    assert not remaining["unreadable"] and not remaining["exact_duplicates"] and not remaining["leakage"]


def test_a_copy_killed_halfway_leaves_no_half_copy_and_the_next_call_makes_it(tmp_path, capsys,
                                                                               monkeypatch):
    """A half copy looks like a cleaned data set: training would take it for one."""
    from catsdogs.data import doctor

    root = planted(tmp_path / "pets")
    copied = []
    original = doctor.copy_file

    def copy_then_crash(source, destination):
        copied.append(source)
        if len(copied) == 3:
            raise Interrupt("killed while copying")
        original(source, destination)

    monkeypatch.setattr(doctor, "copy_file", copy_then_crash)
    argv = [str(root), "--out", str(tmp_path / "doctor.json"), "--fix-into", str(tmp_path / "clean")]
    assert main(argv) == 1  # the crash, reported as an internal error
    assert not (tmp_path / "clean").exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # nor its temp
    monkeypatch.setattr(doctor, "copy_file", original)
    assert main(argv) == 0
    assert "cats_0.png" in {p.name for p in (tmp_path / "clean").rglob("*")}



def test_a_photo_in_two_classes_is_a_label_conflict_and_the_clean_copy_keeps_neither(tmp_path,
                                                                                      capsys):
    root = planted(tmp_path / "pets")
    shutil.copy(root / "train" / "cats" / "cats_1.png", root / "train" / "dogs" / "which.png")
    report = diagnose(root)
    assert [sorted(p.split("/")[-1] for p in g) for g in report["label_conflicts"]] == [
        ["cats_1.png", "which.png"]]
    assert main([str(root), "--out", str(tmp_path / "doctor.json"),
                 "--fix-into", str(tmp_path / "clean")]) == 0
    assert "WARN 1 images in more than one class" in capsys.readouterr().out
    clean = {str(p.relative_to(tmp_path / "clean")) for p in (tmp_path / "clean").rglob("*")}
    assert not {"train/cats/cats_1.png", "train/dogs/which.png"} & clean
    assert "train/cats/cats_0.png" in clean


def test_duplicates_without_split_folders_are_said_to_risk_the_random_split(tmp_path, capsys):
    root = planted(tmp_path / "pets") / "train"  # class folders only: training splits at random
    assert main([str(root), "--out", str(tmp_path / "doctor.json")]) == 0
    out = capsys.readouterr().out
    assert "WARN 1 groups of exact duplicates" in out and "random validation split" in out


def test_fix_into_refuses_a_folder_inside_the_data_before_the_scan(tmp_path, capsys):
    """A copy inside the data would be read as more photos by the next run; and a target that
    cannot be used is said before the scan, not after it."""
    root = planted(tmp_path / "pets")
    files = sorted(root.rglob("*"))
    line = one_error_line(capsys, main, [str(root), "--out", str(tmp_path / "doctor.json"),
                                         "--fix-into", str(root / "clean")])
    assert "--fix-into would go inside the data" in line and str(root / "clean") in line
    assert sorted(root.rglob("*")) == files and not (tmp_path / "doctor.json").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    line = one_error_line(capsys, main, [str(root), "--out", str(tmp_path / "doctor.json"),
                                         "--fix-into", str(tmp_path / "full")])
    assert "not empty" in line and not (tmp_path / "doctor.json").exists()
    (tmp_path / "dotted").mkdir()  # hidden files too: the label audit's copy replaces it whole
    (tmp_path / "dotted" / ".notes").write_text("mine")
    line = one_error_line(capsys, main, [str(root), "--out", str(tmp_path / "doctor.json"),
                                         "--fix-into", str(tmp_path / "dotted")])
    assert "not empty (it holds .notes)" in line
    assert (tmp_path / "dotted" / ".notes").read_text() == "mine"
    (tmp_path / "empty").mkdir()  # a link to an empty folder: replaced by the copy, not filled
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    line = one_error_line(capsys, main, [str(root), "--out", str(tmp_path / "doctor.json"),
                                         "--fix-into", str(tmp_path / "link")])
    assert "is a link" in line and (tmp_path / "link").is_symlink()

def test_training_warns_about_leakage_and_imbalance(tmp_path):
    from catsdogs.config import TrainConfig
    from catsdogs.data.datasets import load_image_data

    root = planted(tmp_path / "pets")
    lines = quick_warnings(load_image_data(TrainConfig(data=str(root)), (32, 32)))
    assert any("also in training" in line and "leak.png" in line for line in lines)
    assert any("imbalanced" in line and "--class-weight auto" in line for line in lines)


def test_class_weight_auto_balances_the_loss():
    from catsdogs.training.train import balanced_class_weights

    weights = balanced_class_weights(np.array([0] * 30 + [1] * 10), 2)
    assert weights[0] * 30 == weights[1] * 10 == 20
