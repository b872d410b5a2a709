"""Where training runs: the default device, several GPUs, or several machines (tf.distribute).

    --strategy auto         MirroredStrategy when more than one GPU is visible, else default
    --strategy mirrored     every visible GPU (or the CPU) of this machine, one replica each
    --strategy multiworker  MultiWorkerMirroredStrategy: several processes or machines, each
                            told its place by the standard TF_CONFIG (or --local-workers N)

Rule for several replicas: `--batch-size` is per replica, so the global batch is
batch_size x replicas (over every worker), and the learning rate is scaled by the replica
count (the linear scaling rule of Goyal et al., 2017, "Accurate, Large Minibatch SGD"). One
replica changes nothing.

Multi-worker training uses TensorFlow's own collective ops for every all-reduce; only Keras'
`fit` needs two narrow patches, because Keras 3.15 fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585, open): (1) `_maybe_symbolic_build` all-reduces a whole input batch
(`strategy.reduce("MEAN", batch)`), which the collective all-reduce cannot take ("Attempt to
convert a value (PerReplica...) to a Tensor"), so the model is built on this worker's first
local batch instead; (2) `reduce_per_replica` reduces the step's 0-d metric values with
`axis=0` ("Invalid reduction dimension 0 for input with 0 dimensions"), so they are reduced
with `axis=None`, which is the mean over all replicas of all workers. `multi_worker_fit`
applies both for the length of one `fit`; tests/test_distribute.py fails loudly when Keras'
code changes under them, and checks that the unpatched failure still exists, so the patches
go the day Keras fixes it.

TensorFlow's gRPC server listens on every interface whatever address TF_CONFIG gives
(`0.0.0.0` is written into grpc_server_lib.cc; no option changes it) and answers anyone
without authentication. `--local-workers` therefore runs its workers in a network namespace
of their own (Linux user namespaces, `unshare`): their loopback is theirs alone, and no other
machine, nor any other process of this one, can reach them. Across machines, keep the
workers on a private network or behind a firewall (docs/several-machines.md).
"""

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

from catsdogs.config import STRATEGIES
from catsdogs.console import log
from catsdogs.errors import CatsDogsError, RunFailed

WORKERS_DIR = "workers"  # inside the run folder: the other workers' resume state, while training
COLLECTIVE_TIMEOUT = 300  # (s) a worker waiting this long for the others stops with an error


@dataclasses.dataclass
class Placement:
    strategy: object  # a tf.distribute.Strategy
    name: str
    replicas: int  # over every worker
    worker: int = 0  # this process's index among the workers
    workers: int = 1

    @property
    def is_chief(self):
        """Worker 0 writes the run folder; the others only train."""
        return self.worker == 0


def cluster_from_environment():
    """(this worker's index, worker count) from the standard TF_CONFIG, checked."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise CatsDogsError("--strategy multiworker needs TF_CONFIG (the cluster and this "
                            "worker's place in it)", where="TF_CONFIG",
                            fix="set it on each machine (see docs/several-machines.md), or try it on this one "
                                "with --local-workers 2")
    try:
        config = json.loads(text)
        workers = list(config["cluster"]["worker"]) + list(config["cluster"].get("chief", []))
        task = config["task"]
        index = int(task["index"]) + (1 if task["type"] == "worker" and "chief" in
                                      config["cluster"] else 0)
        if task["type"] == "chief":
            index = 0
    except (ValueError, KeyError, TypeError) as error:
        raise CatsDogsError(f"TF_CONFIG is not a cluster description ({type(error).__name__})",
                            where="TF_CONFIG", fix='e.g. {"cluster": {"worker": ["host1:2222", '
                                                   '"host2:2222"]}, "task": {"type": "worker", '
                                                   '"index": 0}}') from None
    return index, len(workers)


def worker_folder(run_dir, worker):
    """Where worker `worker` keeps its own files: the run folder for the chief (0), else its
    own folder inside it (removed when the run finishes), so only the chief writes the run's
    files."""
    run_dir = Path(run_dir)
    return run_dir if worker == 0 else run_dir / WORKERS_DIR / f"worker-{worker}"


def remove_worker_folder(folder):
    """A worker's folder, once the run is finished; the last one out removes workers/."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()


class OneDevice:
    """The placement where Keras does not run on TensorFlow (backends.py): one process, and the
    Keras backend's own default device."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def make_placement(name):
    """The strategy for `name`, made before any other TensorFlow work."""
    from catsdogs.backends import tensorflow_trains, why_not_tensorflow

    if not tensorflow_trains():
        if name in ("auto", "default"):
            return Placement(OneDevice(), "default", 1)
        raise CatsDogsError(f"--strategy {name} needs tf.distribute ({why_not_tensorflow()})",
                            where="--strategy", fix="leave --strategy at auto, or run Keras on "
                                                    "TensorFlow (KERAS_BACKEND=tensorflow)")
    import tensorflow as tf

    if name == "multiworker":
        worker, workers = cluster_from_environment()
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=COLLECTIVE_TIMEOUT))
        return Placement(strategy, name, strategy.num_replicas_in_sync, worker, workers)
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


def common_count(placement, count):
    """The smallest of every worker's `count` (each worker's shard must give the same number of
    steps, or the collectives of the longer ones wait forever): an all-reduce of one-hots."""
    if placement.workers == 1:
        return count
    import tensorflow as tf

    mine = tf.one_hot(placement.worker, placement.workers, dtype=tf.float32) * count

    @tf.function  # collectives outside a tf.function are slow, and TensorFlow warns so
    def everyones():
        return placement.strategy.reduce("SUM", placement.strategy.run(lambda: mine), axis=None)

    return int(min(everyones().numpy()))


def take_chief_resume_state(placement, run_dir, backup_of):
    """Every worker resumes from the chief's backup. Each worker backs up into its own folder
    at each epoch's end, so a kill between two workers' writes leaves backups one epoch apart;
    resumed from those, the workers would run different numbers of steps, and the one that
    finished first left the other waiting on collectives until TensorFlow's coordination
    service declared it dead ("stopped sending heartbeats"). Synchronous training keeps every
    worker's weights and optimizer state equal, so the chief's backup is every worker's. The
    chief first completes a swap its kill left half done (runs.recover_dir); a barrier then
    keeps the others from copying before it has."""
    from catsdogs import runs

    chief_backup = backup_of(run_dir)
    if placement.is_chief:
        runs.recover_dir(chief_backup)
    common_count(placement, 0)  # the barrier
    if placement.is_chief:
        return
    mine = backup_of(worker_folder(run_dir, placement.worker))
    if chief_backup.exists():
        runs.replace_dir(mine, lambda temp: shutil.copytree(chief_backup, temp))
    else:  # the chief had finished no epoch: nor has anyone
        shutil.rmtree(mine, ignore_errors=True)


def distribute(placement, dataset_for_worker):
    """A dataset for `fit` under `placement`: as it is on one worker; across workers, each
    worker's own pipeline (it holds only its shard of the files, so tf.data's auto-sharding,
    which would filter a shared source, is off)."""
    if placement.workers == 1:
        return (dataset_for_worker if isinstance(placement.strategy, OneDevice)
                else shard_by_data(dataset_for_worker))
    return placement.strategy.distribute_datasets_from_function(lambda context: dataset_for_worker)


@contextlib.contextmanager
def multi_worker_fit(model, placement, local_batch):
    """The two patches Keras' `fit` needs under MultiWorkerMirroredStrategy (module docstring),
    for the length of one fit; nothing at all on one worker."""
    if placement.workers == 1:
        yield
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    with placement.strategy.scope():
        model._symbolic_build(data_batch=local_batch)  # (1): built here, on this worker's batch
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):  # (2): 0-d values with axis=None
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0),
                values)
        return original(values, strategy, reduction)

    model._maybe_symbolic_build = lambda *args, **kwargs: None
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original
        del model._maybe_symbolic_build


def shard_by_data(dataset):
    """Shard by data, not by file: our datasets come from memory, so tf.data's file-based
    auto-sharding does not apply (and warns) under a distribution strategy."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)



def free_ports(count):
    """`count` free TCP ports on 127.0.0.1 (asked of the OS, then released for the workers)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


PRIVATE_NETWORK_VARIABLE = "CATSDOGS_PRIVATE_NETWORK"  # "1" inside the workers' namespace
UNSHARE = ("unshare", "--user", "--map-root-user", "--net", "--")  # util-linux, unprivileged


def inside_private_network():
    """Whether this is `train --local-workers` run again inside the workers' network namespace
    (run_local_workers), where the launcher outside has settled what comes before the workers."""
    return os.environ.get(PRIVATE_NETWORK_VARIABLE) == "1"


def _last_line(log_file):
    """The last line a quiet worker wrote to its stderr file, or ""."""
    log_file.seek(0)
    lines = log_file.read().strip().splitlines()
    return lines[-1] if lines else ""


def private_network_prefix():
    """The command prefix that runs a program in a new, empty network namespace, or None where
    the system allows none (not Linux, no `unshare`, user namespaces switched off)."""
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or not shutil.which(UNSHARE[0]):
        return None
    try:
        allowed = subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode
    except (OSError, subprocess.TimeoutExpired):
        return None
    return list(UNSHARE) if allowed == 0 else None


def bring_up_loopback():
    """`lo` up in a new network namespace (it starts down): SIOCSIFFLAGS on a socket, what
    `ip link set lo up` does, without needing `ip`."""
    import fcntl
    import socket
    import struct

    get_flags, set_flags, up = 0x8913, 0x8914, 0x1  # SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP
    request = "16sH22x"  # struct ifreq: the name, then the flags in its 24-byte union
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        flags = struct.unpack(request, fcntl.ioctl(probe, get_flags,
                                                   struct.pack(request, b"lo", 0)))[1]
        fcntl.ioctl(probe, set_flags, struct.pack(request, b"lo", flags | up))


def run_local_workers(argv, count, poll_seconds=0.5, grace_seconds=10):
    """Train with `count` workers on this machine: `catsdogs train ARGV` (settings that say
    --strategy multiworker) in `count` processes on 127.0.0.1, each given its TF_CONFIG. Worker 0 (the chief, which
    writes the run folder) speaks on this terminal; the others are quiet unless they fail.
    When one fails, the others are stopped at once and its last line is said.

    Where the system allows it, this runs again inside a network namespace of its own first
    (module docstring), so the workers' unauthenticated servers are reachable from nowhere
    else; where not, it says that they listen on every interface.

    Returns:
        The exit code: 0 when every worker finished, else the failed worker's.
    """
    import subprocess
    import sys
    import tempfile
    import time

    if inside_private_network():
        bring_up_loopback()
    elif (prefix := private_network_prefix()) is not None:
        return _run_to_the_end(
            [*prefix, sys.executable, "-m", "catsdogs", "train", *argv, "--local-workers",
             str(count)], {**os.environ, PRIVATE_NETWORK_VARIABLE: "1"})
    else:
        log().warning("the workers' TensorFlow servers listen on every network interface of "
                      "this machine, unauthenticated (no network namespace could be made here: "
                      "`unshare --user --net` failed); train on a trusted network only")
    ports = free_ports(count)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    command = [sys.executable, "-m", "catsdogs", "train", *argv]
    processes = []
    # a quiet worker's stderr goes to a temporary file, read only if it fails: a pipe nobody
    # reads until then fills (64 kB of TensorFlow's warnings) and blocks the worker mid-epoch,
    # which its peers see as a crash (its heartbeats stop)
    logs = [None]
    try:  # started inside: a worker that fails to start stops those started before it
        for index in range(count):
            env = {**os.environ, "TF_CONFIG": json.dumps({
                "cluster": cluster, "task": {"type": "worker", "index": index}})}
            if index:
                logs.append(tempfile.TemporaryFile("w+"))
            quiet = {} if index == 0 else {"stdout": subprocess.DEVNULL, "stderr": logs[index]}
            own = command if index == 0 else [  # quiet workers: the chief speaks for them
                *(arg for arg in command if arg != "--verbose"), "--quiet"]
            processes.append(subprocess.Popen(own, env=env, text=True, **quiet))
        while True:
            codes = [process.poll() for process in processes]
            failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
            if failed is not None and codes[0] == 0:  # the run is finished: the chief wrote it
                _stop(processes, grace_seconds)
                log().warning(f"worker {failed} ended with exit code {codes[failed]} after the "
                              "chief had finished the run (its collectives lost the chief)")
                return 0
            if failed is not None:
                _stop(processes, grace_seconds)
                if failed:  # the chief said its own error on this terminal
                    last = _last_line(logs[failed])
                    raise RunFailed(f"worker {failed} stopped (exit code {codes[failed]})"
                                    + (f": {last}" if last else ""), where="--local-workers",
                                    fix="the other workers were stopped; fix that, then "
                                        "continue with --resume RUN_DIR --local-workers N")
                for index in range(1, count):  # what a quiet worker said last, if anything
                    if said := _last_line(logs[index]):
                        log().warning(f"worker {index} said last: {said}")
                return codes[0]
            if all(code == 0 for code in codes):
                return 0
            time.sleep(poll_seconds)
    except BaseException:  # Ctrl-C, or a worker that could not start
        _stop(processes, grace_seconds)
        raise
    finally:
        for log_file in logs[1:]:
            log_file.close()


def _run_to_the_end(command, env):
    """Run `command` and return its exit code; Ctrl-C reaches it too (same process group), so
    it is waited for while it stops its workers, then raised here."""
    import subprocess

    process = subprocess.Popen(command, env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.wait()
        raise


def _stop(processes, grace_seconds):
    """Terminate every worker still running; kill those that outlive `grace_seconds`."""
    import subprocess

    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()  # reaped: no zombie left behind
