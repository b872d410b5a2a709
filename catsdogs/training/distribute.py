"""Where training runs: the default device, several GPUs, or several machines (tf.distribute).

    --strategy auto         MirroredStrategy when more than one GPU is visible, else default
    --strategy mirrored     every visible GPU (or the CPU) of this machine, one replica each
    --strategy multiworker  refused for now: Keras 3's `fit` fails under
                            MultiWorkerMirroredStrategy (keras-team/keras#20585, open in 3.15)

Rule for several replicas: `--batch-size` is per replica, so the global batch is
batch_size x replicas, and the learning rate is scaled by the replica count (the linear
scaling rule of Goyal et al., 2017, "Accurate, Large Minibatch SGD"). One replica changes
nothing.
"""

import dataclasses

from catsdogs.config import STRATEGIES
from catsdogs.errors import CatsDogsError


@dataclasses.dataclass
class Placement:
    strategy: object  # a tf.distribute.Strategy
    name: str
    replicas: int


def make_placement(name):
    """The strategy for `name`, made before any other TensorFlow work."""
    import tensorflow as tf

    if name == "multiworker":
        # Tried with a pre-built model to dodge the first failure (fit's symbolic build
        # all-reduces an input batch); the train step's metric reduction fails next.
        raise CatsDogsError("multi-worker training is not available: Keras 3's fit fails under "
                            "MultiWorkerMirroredStrategy (keras-team/keras#20585)",
                            where="--strategy multiworker",
                            fix="use --strategy mirrored for the GPUs of one machine")
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        raise CatsDogsError(f"unknown strategy {name!r}", where="--strategy",
                            fix=f"one of {', '.join(STRATEGIES)}")
    return Placement(strategy, name, strategy.num_replicas_in_sync)


def shard_by_data(dataset):
    """Shard by data, not by file: our datasets come from memory, so tf.data's file-based
    auto-sharding does not apply (and warns) under a distribution strategy."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)

