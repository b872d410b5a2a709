"""A --config file's values of the wrong JSON type are one `error:` line naming the setting and
the file (exit 2), never `error: internal: TypeError` from a range check."""

import json
import subprocess
import sys

import pytest

from catsdogs import config as cfg
from catsdogs.commands.train import main
from catsdogs.errors import CatsDogsError

from conftest import REPO, one_error_line


@pytest.mark.parametrize("settings, key, received", [
    ({"epochs": "two"}, "'epochs'", "'two'"),
    ({"val_split": "0.2"}, "'val_split'", "'0.2'"),
    ({"augment": 5}, "'augment'", "5"),
    ({"augment": {"rotation_range": "a"}}, "'augment.rotation_range'", "'a'"),
    ({"seed": 1.5}, "'seed'", "1.5"),
    ({"epochs": True}, "'epochs'", "true"),  # a bool is no count
    ({"batch_size": False}, "'batch_size'", "false"),
    ({"augment": {"horizontal_flip": "yes"}}, "'augment.horizontal_flip'", "'yes'"),
    ({"augment": {"brightness_range": ["a", 1]}}, "'augment.brightness_range'", "['a', 1]"),
    ({"lookahead": 1}, "'lookahead'", "1"),
    ({"preset": 3}, "'preset'", "3"),
])
def test_wrong_type_in_config_file_is_one_line(capsys, tmp_path, settings, key, received):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(settings))
    line = one_error_line(capsys, main, ["--config", str(path)])
    assert line.startswith(f"error: bad value for setting {key}: expected "), line
    assert f"received {received} ({path})" in line and "internal" not in line, line


def test_quoted_number_says_to_drop_the_quotes(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"val_split": "0.2"}))
    with pytest.raises(CatsDogsError, match="write it without quotes: 0.2"):
        cfg.read_settings_file(path)


def test_unknown_nested_key_names_its_parent(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"augment": {"rotaton_range": 5}}))
    with pytest.raises(CatsDogsError, match=r"unknown setting 'augment.rotaton_range'.*"
                                            r"did you mean 'rotation_range'"):
        cfg.read_settings_file(path)


def test_valid_config_still_loads(tmp_path):
    settings = {"config_version": 1, "epochs": 3, "val_split": 0.25, "learning_rate": 1,
                "seed": 7, "preset": None, "lookahead": True, "dataset": "folder",
                "augment": {"rotation_range": 10, "width_shift_range": 2, "zoom_range": 0.1,
                            "horizontal_flip": True, "brightness_range": [0.9, 1.1]}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(settings))
    values = cfg.read_settings_file(path)
    config = cfg.TrainConfig(**values)
    assert config.epochs == 3 and config.learning_rate == 1 and config.seed == 7
    assert config.augment.zoom_range == (0.9, 1.1) and config.augment.width_shift_range == 2


def test_saved_run_config_reads_back(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.run_config_dict(cfg.TrainConfig(
        epochs=2, augment=cfg.AugmentConfig(brightness_range=(0.8, 1.2))))))
    assert cfg.read_run_config(path).augment.brightness_range == (0.8, 1.2)


def test_wrong_type_in_run_config_is_one_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**cfg.run_config_dict(cfg.TrainConfig()), "patience": "3"}))
    with pytest.raises(CatsDogsError, match="bad value for setting 'patience'"):
        cfg.read_run_config(path)


def test_a_run_configs_refused_value_is_said_to_come_from_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**cfg.run_config_dict(cfg.TrainConfig()), "batch_size": -5}))
    with pytest.raises(CatsDogsError, match=r"the run's settings: bad value for --batch-size.*"
                                            r"config.json\): restore the file"):
        cfg.read_run_config(path)


def test_a_copied_run_config_given_to_config_leaves_the_old_runs_folder_behind(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.run_config_dict(cfg.TrainConfig(epochs=3,
                                                                   run_dir="runs/old"))))
    values = cfg.read_settings_file(path)
    assert values["epochs"] == 3 and "run_dir" not in values
    path.write_text(json.dumps({"epochs": 3, "run_dir": "runs/mine"}))  # a settings file's own
    assert cfg.read_settings_file(path)["run_dir"] == "runs/mine"


def test_real_process_exits_2_without_traceback(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"epochs": "two"}))
    result = subprocess.run([sys.executable, "-m", "catsdogs", "train", "--config", "c.json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == ("error: bad value for setting 'epochs': expected an integer or null, "
                         "received 'two' (c.json): write a whole number without quotes, e.g. 3, "
                         "or null"), lines
    assert "Traceback" not in result.stderr
