"""tf.distribute: MirroredStrategy on one CPU replica; multi-worker refused with its reason."""

import json

from catsdogs.commands.train import main


def test_mirrored_strategy_runs_with_one_cpu_replica(binary_folders, tmp_path):
    code = main(["--data", str(binary_folders), "--preset", "seed-cifar10", "--epochs", "1",
                 "--strategy", "mirrored", "--run-dir", str(tmp_path / "run")])
    assert code == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["strategy"] == "mirrored"
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_multiworker_is_refused_with_the_upstream_bug_named(binary_folders, tmp_path, capsys):
    code = main(["--data", str(binary_folders), "--strategy", "multiworker",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "keras-team/keras#20585" in err[0]
    assert not (tmp_path / "run").exists()
