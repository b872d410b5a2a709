"""doctor --label-issues finds planted label errors out of fold, reports k-fold accuracy, resumes
by fold and never touches the data."""

import csv
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from catsdogs.commands.doctor import main
from catsdogs.training import audit, kfold

from conftest import REPO, TWO_CLASSES, Interrupt, one_error_line, write_class_images

# seed-cifar10 at 32x32 for 2 epochs separates the two colours; 2 folds keep it quick
QUICK = ["--label-issues", "--preset", "seed-cifar10", "--epochs", "2", "--batch-size", "16"]
FLIPPED = {"cats": ["cats_3.png", "cats_10.jpg"], "dogs": ["dogs_5.bmp", "dogs_20.bmp"]}


def contents(folder):
    """{relative path: bytes} of every file below `folder`."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def flip_labels(root):
    """Move 4 of the 80 images (5 %) into the other class's folder; return their new paths."""
    moved = set()
    for given, names in FLIPPED.items():
        other = next(name for name in TWO_CLASSES if name != given)
        for name in names:
            shutil.move(root / given / name, root / other / name)
            moved.add(str(root / other / name))
    return moved


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """One audit of 80 generated images with 5 % of labels flipped (the later tests rerun its
    command, which then skips every fold)."""
    base = tmp_path_factory.mktemp("audit")
    data = write_class_images(base / "pets", TWO_CLASSES, 40, size=(32, 32), seed=5)
    flipped = flip_labels(data)
    before = contents(data)
    argv = [str(data), *QUICK, "--folds", "2", "--out-dir", str(base / "audit")]
    assert main(argv) == 0
    return types.SimpleNamespace(base=base, data=data, flipped=flipped, before=before, argv=argv,
                                 out=base / "audit")


def read_issues(out):
    with open(out / audit.ISSUES_FILE, newline="") as handle:
        return list(csv.DictReader(handle))


def test_audit_finds_the_flipped_labels(audited):
    suspects = {row["path"] for row in read_issues(audited.out)}
    found = suspects & audited.flipped
    # 3 of the 4: each fold's 6 held-out photos are too few to fit a temperature, so the
    # probabilities are the model's own (4 of 4 were found only with a temperature fitted on
    # those 6 photos, at the search's bound of 0.05: probabilities sharpened to 0 and 1)
    assert len(found) / len(audited.flipped) >= 0.75, (suspects, audited.flipped)
    assert len(found) / len(suspects) >= 0.6, (suspects, audited.flipped)
    for row in read_issues(audited.out):
        if row["path"] in audited.flipped:  # suggested: the class it was taken from
            assert row["suggested_label"] != row["given_label"]
            assert row["suggested_label"] in row["path"].rsplit("/", 1)[1]


def test_csv_columns_kfold_summary_and_the_data_unchanged(audited, capsys):
    assert main(audited.argv) == 0  # every fold finished: only cleanlab runs again
    out = capsys.readouterr().out
    record = json.loads((audited.out / audit.RECORD_FILE).read_text())
    accuracy = record["accuracy"]
    assert len(accuracy["per_fold"]) == 2 and sorted(record["folds"]) == ["1", "2"]
    assert accuracy["mean"] == pytest.approx(np.mean(accuracy["per_fold"]))
    assert accuracy["std"] == pytest.approx(np.std(accuracy["per_fold"], ddof=1))
    assert f"{accuracy['mean']:.4f} ± {accuracy['std']:.4f}" in out
    assert all(f"{value:.4f}" in out for value in accuracy["per_fold"])
    with open(audited.out / audit.ISSUES_FILE, newline="") as handle:
        assert next(csv.reader(handle)) == ["rank", "path", "given_label", "suggested_label",
                                            "self_confidence"]
    issues = read_issues(audited.out)
    assert [int(row["rank"]) for row in issues] == list(range(1, len(issues) + 1))
    assert all(row["path"] in out for row in issues[:audit.SUMMARY_NAMED])
    assert (audited.out / audit.GALLERY_FILE).stat().st_size > 0
    assert all((audited.out / f"fold-{k}" / "oof.npy").is_file() for k in (1, 2))
    assert contents(audited.data) == audited.before


def test_fix_into_leaves_the_suspects_out(audited, capsys):
    target = audited.base / "clean"
    assert main([*audited.argv, "--fix-into", str(target)]) == 0
    suspects = {row["path"] for row in read_issues(audited.out)}
    copied = set(contents(target))
    expected = {path for path in audited.before
                if str(audited.data / path) not in suspects}
    assert copied == expected and suspects
    out, err = capsys.readouterr()
    assert "suspects left out" in out and "validation/test folder" not in err  # no such folder
    assert contents(audited.data) == audited.before


def test_suspects_in_the_validation_folder_are_counted_for_a_warning():
    """The cleaned copy's validation/ would be cleaned by the models' judgement."""
    images = types.SimpleNamespace(
        split=types.SimpleNamespace(paths=["d/train/cats/a.png", "d/validation/cats/b.png",
                                           "d/test/dogs/c.png", "d/train/dogs/e.png"]),
        places=[("train", "a.png"), ("validation", "b.png"), ("test", "c.png"),
                ("train", "e.png")])
    issue = lambda path: types.SimpleNamespace(path=path)
    result = types.SimpleNamespace(images=images, issues=[
        issue("d/validation/cats/b.png"), issue("d/train/dogs/e.png"), issue("d/test/dogs/c.png")])
    assert audit.suspects_outside_training(result) == 2


def test_relabel_copies_the_suspects_into_their_suggested_class(audited):
    target = audited.base / "relabelled"
    assert main([*audited.argv, "--fix-into", str(target), "--relabel"]) == 0
    copied = contents(target)
    assert len(copied) == len(audited.before)
    for row in read_issues(audited.out):
        name = row["path"].rsplit("/", 1)[1]
        assert f"{row['suggested_label']}/{name}" in copied
        assert f"{row['given_label']}/{name}" not in copied
    assert contents(audited.data) == audited.before


def test_other_settings_in_the_same_folder_are_one_error_line(audited, capsys):
    argv = [*audited.argv, "--epochs", "3"]
    line = one_error_line(capsys, main, argv)
    assert "other settings" in line and "epochs 2 -> 3" in line


def test_a_killed_audit_skips_finished_folds_and_resumes_the_one_it_was_in(tmp_path, monkeypatch):
    from catsdogs.training import callbacks, train

    data = write_class_images(tmp_path / "pets", TWO_CLASSES, 12, size=(32, 32), seed=7)
    argv = [str(data), *QUICK, "--folds", "2", "--out-dir", str(tmp_path / "a")]
    trained, epochs = [], []
    finish_run, epoch_begin = train.finish_run, callbacks.HistoryCSV.on_epoch_begin

    def count_folds(config, **kwargs):
        trained.append(Path(config.run_dir).parent.name)
        finish_run(config, **kwargs)

    def kill_in_fold_2(self, epoch, logs=None):  # after fold 2's first epoch is stored
        epochs.append(epoch)
        if trained == ["fold-1", "fold-2"] and epoch == 1:
            raise Interrupt("simulated kill at the start of fold 2's second epoch")
        epoch_begin(self, epoch, logs)

    monkeypatch.setattr(train, "finish_run", count_folds)
    monkeypatch.setattr(callbacks.HistoryCSV, "on_epoch_begin", kill_in_fold_2)
    monkeypatch.delenv("CATSDOGS_DEBUG", raising=False)
    assert main(argv) == 1
    first_fold = (tmp_path / "a" / "fold-1" / "oof.npy").read_bytes()
    assert not (tmp_path / "a" / "fold-2" / "oof.npy").exists()
    trained.clear()
    epochs.clear()
    assert main(argv) == 0
    assert trained == ["fold-2"] and epochs == [1]  # fold 1 skipped, fold 2 from its epoch 2
    assert (tmp_path / "a" / "fold-1" / "oof.npy").read_bytes() == first_fold
    record = json.loads((tmp_path / "a" / audit.RECORD_FILE).read_text())
    assert sorted(record["folds"]) == ["1", "2"] and len(record["accuracy"]["per_fold"]) == 2


def test_one_fold_is_one_error_line(tmp_path, capsys):
    data = write_class_images(tmp_path / "pets", TWO_CLASSES, 6, size=(32, 32))
    line = one_error_line(capsys, main, [str(data), "--label-issues", "--folds", "1"])
    assert "--folds" in line and "received 1" in line
    assert not (tmp_path / "runs" / "label-audit-pets").exists()


def test_a_class_too_small_for_the_folds_is_one_error_line(tmp_path, capsys):
    data = write_class_images(tmp_path / "pets", TWO_CLASSES, 6, size=(32, 32))
    line = one_error_line(capsys, main, [str(data), "--label-issues", "--folds", "5"])
    assert "'cats' has 6 usable images" in line and "--folds" in line
    assert not (tmp_path / "runs" / "label-audit-pets").exists()


def test_audit_flags_without_label_issues_are_one_error_line(tmp_path, capsys):
    data = write_class_images(tmp_path / "pets", TWO_CLASSES, 6, size=(32, 32))
    assert "--folds" in one_error_line(capsys, main, [str(data), "--folds", "3"])
    assert "--fix-into" in one_error_line(capsys, main, [str(data), "--label-issues", "--relabel"])


def test_folds_are_stratified_and_seeded():
    labels = np.array([0] * 10 + [1] * 7 + [2] * 4)
    fold_of = kfold.stratified_folds(labels, 3, seed=1)
    for label in range(3):
        per_fold = np.bincount(fold_of[labels == label], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1
    assert np.bincount(fold_of).max() - np.bincount(fold_of).min() <= 1
    assert np.array_equal(fold_of, kfold.stratified_folds(labels, 3, seed=1))
    assert not np.array_equal(fold_of, kfold.stratified_folds(labels, 3, seed=2))


def test_doctor_help_loads_neither_keras_nor_cleanlab():
    code = ("import sys; from catsdogs.commands import doctor; doctor.build_parser(); "
            "print(sorted(m for m in ('keras', 'tensorflow', 'cleanlab') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.stdout.strip() == "[]", result


def test_suspects_of_models_near_chance_come_with_a_warning(tmp_path):
    """Out-of-fold models barely above always-the-largest-class find "errors" that are their
    own: the summary says so before naming them."""
    def audit_at(accuracy):
        split = types.SimpleNamespace(labels=[0] * 5 + [1] * 5)
        return types.SimpleNamespace(
            summary_line=lambda: "k-fold accuracy", mean_accuracy=accuracy, folder=tmp_path,
            images=types.SimpleNamespace(split=split),
            issues=[audit.LabelIssue(1, str(tmp_path / "a.png"), "cats", "dogs", 0.01)])

    near, clear = audit.summary_lines(audit_at(0.59)), audit.summary_lines(audit_at(0.9))
    assert "near chance (0.59 against 0.50" in near[1]
    assert not any("near chance" in line for line in clear)
