"""Where the work runs: one device, several on one machine, several machines, a TPU (tf.distribute), in
which float precision (mixed precision), and which process may write results.

A script calls `start` first, before any other TensorFlow work (MultiWorkerMirroredStrategy must be
created before the first op), builds and compiles its models inside `strategy.scope()`, and leaves the
rest to Keras's `fit`. Batch sizes in the constants are per replica: the global batch is
`BATCH_SIZE * replicas` (`global_batch`); learning rates stay as the constants say, so a run on 8 GPUs
takes 8 times larger steps in data with the same learning rate (scale it yourself if you want).
"""

import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from transferlab import compat, files, process
from transferlab.errors import UserError, check

STRATEGIES = ("auto", "none", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", None, "mixed_float16", "mixed_bfloat16")


def start(name, precision, resume=None):
    """Create the strategy `name` (one of STRATEGIES) and set the mixed-precision policy; returns the strategy.

    "auto": MirroredStrategy over the GPUs when there is more than one, otherwise one device. "mirrored":
    every GPU, or with none every logical CPU device (how the tests run it on a CPU). "multi_worker":
    MultiWorkerMirroredStrategy with the cluster from the TF_CONFIG environment variable. "tpu": TPUStrategy
    (not tested here: no TPU). Precision "auto": mixed_float16 when a GPU is visible, float32 otherwise.
    """
    check(name in STRATEGIES, f"--distribute={name}: expected one of {', '.join(STRATEGIES)}")
    check(precision in PRECISIONS, f"--mixed_precision={precision}: expected one of "
                                   f"{', '.join(map(str, PRECISIONS))}")
    check(resume is None or name != "multi_worker",
          "--resume works on one machine only, not with --distribute=multi_worker")
    gpus = tf.config.list_physical_devices("GPU")  # physical: listing logical devices would start TF's runtime,
    if name == "multi_worker":                       # after which a multi-worker cluster can no longer be set up
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        compat.patch_keras_for_multi_worker()
    elif name == "mirrored" or (name == "auto" and len(gpus) > 1):
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    elif name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as error:
            raise UserError(f"--distribute=tpu: no TPU found ({str(error).splitlines()[0][:200]})") from None
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        strategy = tf.distribute.get_strategy()  # the default: one device, no distribution
    if precision == "auto":
        precision = "mixed_float16" if gpus else None
    keras.mixed_precision.set_global_policy(precision or "float32")
    return strategy


def describe(strategy, batch_size):
    """The record's "distribute" section: strategy, replicas, workers, global batch and float policy."""
    kinds = {tf.distribute.MultiWorkerMirroredStrategy: "multi_worker", tf.distribute.MirroredStrategy: "mirrored",
             tf.distribute.TPUStrategy: "tpu"}
    return {
        "strategy": kinds.get(type(strategy), "none"),
        "replicas": strategy.num_replicas_in_sync,
        "workers": workers(strategy),
        "global_batch_size": batch_size * strategy.num_replicas_in_sync,
        "mixed_precision": keras.mixed_precision.global_policy().name,
    }


def workers(strategy=None):
    """How many machines (processes) share the training: 1 unless MultiWorkerMirroredStrategy spans more."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def is_chief(strategy):
    """True for the one process that writes records, plots and caches: the "chief" task of TF_CONFIG, or
    worker 0 when the cluster has no chief, or the only process."""
    if workers(strategy) == 1:
        return True
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return task.get("type") == "chief" or (not has_chief and task.get("type") == "worker" and task.get("index") == 0)


def results_dir(folder, strategy):
    """Where this process writes its run: `folder` for the chief; for another worker a temporary folder of
    its own, removed when it exits, which also takes its caches (decoded images), so two processes never
    write the same file."""
    if is_chief(strategy):
        return folder
    own = tempfile.mkdtemp(prefix="transferlab-worker-")
    process.on_exit(shutil.rmtree, own, ignore_errors=True)
    os.environ[files.CACHE_DIR_ENV] = os.path.join(own, "cache")
    return own


def global_batch(batch_size):
    """Per-replica batch size -> the batch one step takes across every replica of the current strategy."""
    return batch_size * tf.distribute.get_strategy().num_replicas_in_sync


def sharded(dataset):
    """Every worker reads the same pipeline and keeps its share of each batch (AutoShardPolicy.DATA):
    our datasets come from arrays in memory, not from files that could be split between workers."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
