"""Every touch of Keras's private API, in one place, each checked against the Keras in requirements.txt.

Keras has no public way to do these few things; each function says why it is needed. When Keras is upgraded,
`tests/test_compat.py` fails on purpose until each one has been checked again against the new version.
"""

import tensorflow as tf

CHECKED_WITH_KERAS = "3.15.1"


def inbound_tensors(layer):
    """The tensors each call of `layer` took as input (`Layer._inbound_nodes`). Needed to find where a
    backbone can be cut in two for fine-tuning on cached activations: Keras's graph of a Functional model is
    not public."""
    return [tensor for node in layer._inbound_nodes for tensor in node.input_tensors]


def producer(tensor):
    """The layer (operation) that computed a symbolic `tensor` (`KerasTensor._keras_history`), for the same
    cut."""
    return tensor._keras_history.operation


def patch_keras_for_multi_worker():
    """Keras 3.15's `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585, open): before the
    first step it averages a whole input batch across workers with one `strategy.reduce` call, which that
    strategy cannot do for a tuple; and it averages the scalar loss and metrics over axis 0, which a scalar
    has not. Both only gather values for logging or for shape inference; the gradients are reduced by the
    strategy itself. These two replacements fix exactly those steps and nothing else."""
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_transferlab_patched", False):
        return
    reduce_per_replica = trainer.reduce_per_replica

    def reduce_scalars_too(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            def mean(value):
                rank = strategy.experimental_local_results(value)[0].shape.rank
                return strategy.reduce("MEAN", value, axis=0 if rank else None)
            return tf.nest.map_structure(mean, values)
        return reduce_per_replica(values, strategy, reduction)

    def build_from_local_batch(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
            local = self.distribute_strategy.experimental_local_results
            data_batch = tf.nest.map_structure(lambda value: local(value)[0], data_batch)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.reduce_per_replica = reduce_scalars_too
    trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_local_batch
    trainer._transferlab_patched = True
