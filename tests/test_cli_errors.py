"""Every user error: one line `error: ...` naming the flag or file and the fix, exit code 2."""

import json
import subprocess
import sys

import pytest

from catsdogs.commands.train import main

from conftest import REPO, TWO_CLASSES, one_error_line, write_class_images


def test_missing_folder(capsys, tmp_path):
    line = one_error_line(capsys, main, ["--data", str(tmp_path / "nowhere")])
    assert "folder not found" in line and "nowhere" in line
    assert not (tmp_path / "runs").exists()  # nothing written for a run that cannot start


def test_only_one_class(capsys, tmp_path):
    write_class_images(tmp_path / "d", {"cats": (1, 2, 3)}, 2)
    line = one_error_line(capsys, main, ["--data", str(tmp_path / "d")])
    assert "at least two class sub-folders" in line and "'cats'" in line


def test_empty_class_folder(capsys, tmp_path):
    write_class_images(tmp_path / "d", TWO_CLASSES, 2)
    (tmp_path / "d" / "birds").mkdir()
    line = one_error_line(capsys, main, ["--data", str(tmp_path / "d")])
    assert "no images" in line and "birds" in line


def test_class_with_only_unreadable_files(capsys, tmp_path):
    write_class_images(tmp_path / "d", TWO_CLASSES, 3)
    for path in (tmp_path / "d" / "dogs").iterdir():
        path.unlink()
    (tmp_path / "d" / "dogs" / "fake.jpg").write_text("text")
    line = one_error_line(capsys, main, ["--data", str(tmp_path / "d"), "--preset", "seed-cifar10"],
                          alone=False)  # found by decoding, after its progress lines
    assert "no readable images for class 'dogs'" in line and "skipped.csv" in line


@pytest.mark.parametrize("argv, expected", [
    (["--preset", "seed-catdog"], "unknown preset 'seed-catdog'"),
    (["--dataset", "cifar100"], "--dataset"),
    (["--epochs", "0"], "--epochs: expected an integer >= 1, received 0"),
    (["--epochs", "many"], "--epochs: invalid int value: 'many'"),
    (["--learning-rate", "-1"], "--learning-rate"),
    (["--batch-size", "0"], "--batch-size"),
    (["--val-split", "1.5"], "--val-split"),
    (["--rotation-range", "-5"], "--rotation-range"),
    (["--brightness-range", "2", "1"], "--brightness-range"),
    (["--train-dir", "x"], "--train-dir and --val-dir go together"),
    (["--resume", "nowhere"], "run folder not found"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--weights", "imagenet"], "preset 'seed-catsdogs' has no pretrained weights"),
    (["--weights", "imagnet"], "did you mean 'imagenet'"),
    (["--lookahead", "--fine-tune-epochs", "2"], "--lookahead cannot span two stages"),
    (["--quiet", "--verbose"], "--verbose: not allowed with argument --quiet"),
    (["--epcohs", "1"], "unrecognized arguments: --epcohs 1: did you mean --epochs?"),
])
def test_bad_flags(capsys, argv, expected):
    assert expected in one_error_line(capsys, main, argv)


def test_val_split_where_the_data_has_its_own_validation_folder(capsys, tmp_path):
    for split in ("train", "validation"):
        write_class_images(tmp_path / "d" / split, TWO_CLASSES, 2)
    line = one_error_line(capsys, main, ["--data", str(tmp_path / "d"), "--val-split", "0.3",
                                         "--run-dir", str(tmp_path / "run")])
    assert "--val-split is not used" in line and "validation/" in line
    assert not (tmp_path / "run").exists()
    settings = tmp_path / "settings.json"  # a split of its own in a settings file: the same
    settings.write_text(json.dumps({"val_split": 0.3}))
    line = one_error_line(capsys, main, ["--data", str(tmp_path / "d"), "--config", str(settings),
                                         "--run-dir", str(tmp_path / "run")])
    assert "--val-split is not used" in line and "settings.json (val_split)" in line
    settings.write_text(json.dumps({"val_split": 0.2}))  # the default, as tune's best.json holds
    from catsdogs.commands.train import build_parser, config_from_args
    config_from_args(build_parser().parse_args(["--data", str(tmp_path / "d"),
                                                "--config", str(settings)]))  # not refused
    line = one_error_line(capsys, main, ["--dataset", "cifar10", "--val-split", "0.3",
                                         "--run-dir", str(tmp_path / "run")])
    assert "--val-split is not used" in line and "10,000 test images" in line
    assert not (tmp_path / "run").exists()
    line = one_error_line(capsys, main, ["--dataset", "cifar10", "--data", str(tmp_path / "d"),
                                         "--val-split", "0.3", "--run-dir", str(tmp_path / "run")])
    assert "--val-split is not used" in line and "validation/" in line  # any --dataset's folder


def test_dataset_typo_suggests_the_right_name(capsys):
    assert "did you mean 'cifar10'" in one_error_line(capsys, main, ["--dataset", "cifar-10"])


def test_unknown_key_in_config_file(capsys, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"epoch": 3}))
    line = one_error_line(capsys, main, ["--config", str(tmp_path / "c.json")])
    assert "unknown setting 'epoch'" in line and "did you mean 'epochs'" in line


@pytest.mark.parametrize("config, expected", [("missing.json", "file not found"),
                                              (".", "not a file")])
def test_a_config_file_that_cannot_be_read_is_one_line(capsys, tmp_path, config, expected):
    line = one_error_line(capsys, main, ["--config", str(tmp_path / config)])
    assert expected in line and str(tmp_path) in line


def test_run_folder_is_never_written_over(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    line = one_error_line(capsys, main, ["--run-dir", str(tmp_path / "run")])
    assert "already holds a run" in line and "--resume" in line
    assert (tmp_path / "run" / "config.json").read_text() == "{}"


def test_real_process_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "catsdogs.train", "--data", str(tmp_path / "none")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: folder not found")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "export", "doctor"])
def test_help_answers_without_loading_keras(command):
    """--help is instant: no command imports Keras (seconds of TensorFlow) before argparse."""
    code = (f"import sys\nfrom catsdogs.commands.{command} import main\ntry:\n    main(['--help'])\n"
            f"except SystemExit:\n    pass\nprint('loaded keras:', 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip().splitlines()[-1] == "loaded keras: False", result.stderr[-500:]


def test_help_lists_flags_with_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--rotation-range", "--width-shift-range", "--shear-range", "--zoom-range",
                 "--horizontal-flip", "--brightness-range", "--resume", "--patience"):
        assert flag in out
    assert "[default: 42]" in out  # the seed
    assert "--schedule" in out and "--label-smoothing" in out and "--weight-decay" in out


def test_the_settings_catsdogs_sets_itself_are_no_flags_and_config_json_keeps_them(capsys):
    """A k-fold fold's shared cache and a refit's union are set by the run that starts them:
    no user flag to explain, yet a run's config.json must hold them to resume as it ran."""
    import dataclasses

    from catsdogs import config as cfg

    internal = [field.name for field in dataclasses.fields(cfg.TrainConfig)
                if field.metadata["internal"]]
    assert sorted(internal) == ["cache_source", "calibration_minimum", "refit_union",
                              "selection_chooses_runs", "workers"]
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--cache-dir" in out and "--refit" in out
    assert not [name for name in internal if f"--{cfg.flag_name(name)}" in out]
    for name in internal:  # nor can they be typed
        assert main([f"--{cfg.flag_name(name)}"]) == 2
        assert f"unrecognized arguments: --{cfg.flag_name(name)}" in capsys.readouterr().err
    saved = cfg.run_config_dict(cfg.TrainConfig(cache_source="/photos", refit_union=True))
    assert (saved["cache_source"], saved["refit_union"]) == ("/photos", True)


def test_the_default_data_folder_missing_names_the_flag(capsys, tmp_path, monkeypatch):
    """Run outside the repository without --data: the line names --data, not only a path the
    user never typed."""
    monkeypatch.chdir(tmp_path)
    line = one_error_line(capsys, main, ["--epochs", "1"])
    assert "no --data given" in line and "data/cats_and_dogs" in line
