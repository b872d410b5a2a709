"""Runs `catsdogs train ARGS` as one worker of a test cluster and saves its final weights.

    python tests/multiworker_driver.py OUT.npy [INDEX PORT,PORT] -- train flags...

With INDEX and ports, TF_CONFIG makes it worker INDEX of a cluster on 127.0.0.1; without,
it trains alone. The pipeline's shuffle is turned off, so the order of the batches is known
and a one-process run on the concatenated global batches can be compared with the workers.
"""

import json
import os
import sys

out, rest = sys.argv[1], sys.argv[2:]
split = rest.index("--")
if split == 2:
    index, ports = int(rest[0]), rest[1].split(",")
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})
import keras  # noqa: E402
import numpy as np  # noqa: E402

from catsdogs.data import tf_pipeline  # noqa: E402

unshuffled = tf_pipeline.make_dataset


def make_dataset(split, batch_size, augmenter=None, shuffle_seed=None, **options):
    return unshuffled(split, batch_size, augmenter, None, **options)


tf_pipeline.make_dataset = make_dataset
fit = keras.Model.fit


def fit_and_save(self, *args, **kwargs):
    history = fit(self, *args, **kwargs)
    np.save(out, np.concatenate([np.ravel(w) for w in self.get_weights()]))
    return history


keras.Model.fit = fit_and_save
from catsdogs.commands.train import main  # noqa: E402

sys.exit(main(rest[split + 1:]))
