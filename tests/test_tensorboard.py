"""What TensorBoard shows of a run: the HParams dashboard, a confusion matrix per
few epochs, the model graph, read back with TensorBoard's own event loader."""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import catsdogs
from catsdogs.config import TrainConfig


def events(folder):
    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0, "images": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import TWO_CLASSES, write_class_images

    root = tmp_path_factory.mktemp("tb")
    write_class_images(root / "d" / "train", TWO_CLASSES, 8, size=(32, 32), seed=1)
    write_class_images(root / "d" / "validation", TWO_CLASSES, 4, size=(32, 32), seed=2)
    return catsdogs.train(TrainConfig(data=str(root / "d"), preset="seed-cifar10", epochs=2,
                                      batch_size=8, run_dir=str(root / "run")))


def test_hparams_dashboard_holds_the_settings_and_the_accuracies(run):
    logs = events(run.dir / "logs")
    content = logs.PluginTagToContent("hparams")
    start = next(plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info
                 for c in content.values()
                 if plugin_data_pb2.HParamsPluginData.FromString(c).HasField("session_start_info"))
    hparams = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
               for name, value in start.hparams.items()}
    assert hparams["preset"] == "seed-cifar10" and hparams["optimizer"] == "adam"
    assert hparams["batch_size"] == 8 and hparams["epochs"] == 2 and hparams["image_size"] == 32
    assert hparams["learning_rate"] == pytest.approx(1e-3)
    best = [e.tensor_proto.float_val[0] if e.tensor_proto.float_val else
            float(__import__("tensorflow").make_ndarray(e.tensor_proto))
            for e in logs.Tensors("best_val_accuracy")]
    assert len(best) == 2 and best[-1] == pytest.approx(run.metrics["best_val_accuracy"], abs=1e-6)
    assert logs.Tensors("final_val_accuracy")


def test_a_confusion_matrix_image_each_epoch_and_the_graph(run):
    validation = events(run.dir / "logs" / "validation_images")
    images = validation.Tensors("confusion matrix")
    assert [e.step for e in images] == [0, 1]  # 2 epochs: every epoch (and the last)
    width, height = (int(v) for v in images[-1].tensor_proto.string_val[:2])
    assert width > 100 and height > 100  # a rendered figure, PNG-encoded
    assert images[-1].tensor_proto.string_val[2].startswith(b"\x89PNG")
    # the model's graph: Keras 3 writes the conceptual graph (TensorBoard's Graphs tab), its
    # op-level graph is "not supported at this time" (Keras' TensorBoard docstring)
    train = events(run.dir / "logs" / "train")
    assert "keras" in train.PluginTagToContent("graph_keras_model")


def test_one_events_file_a_folder_so_a_live_tensorboard_follows_every_curve(run):
    """TensorBoard follows only the newest events file of a folder while it runs: Keras'
    train/ and validation/ hold Keras' file alone, and each writer of ours is one file for the
    run, not one an epoch."""
    logs = run.dir / "logs"
    for folder in ("", "train", "validation", "train_images", "validation_images"):
        assert len(list((logs / folder).glob("events.out.tfevents.*"))) == 1, folder
    assert "training images (augmented)" in events(logs / "train_images").Tags()["tensors"]
