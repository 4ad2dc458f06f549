"""LiteRT for the frozen passes: a network that only infers (a frozen backbone, the frozen bottom before the
fine-tuning cut, a saved classifier) converted once by TensorFlow's LiteRT converter and run by the LiteRT
interpreter (the ai-edge-litert package) with XNNPACK and a thread per core. On these CPUs it runs
MobileNetV2's depthwise convolutions several times faster than TensorFlow's executor (docs/benchmarks.md).

    inference = litert.Inference.choose(setting)            # "auto", "keras" or "litert": which, and why
    run_batch, info = inference.batch_function(model)       # numpy batch -> numpy outputs, and what ran

A converted file is kept in ~/.cache/transferlab/litert/ (or $TRANSFERLAB_CACHE_DIR/litert/) under a sha256 of
the model (layer kinds, output shapes, weights, precision policy) and TensorFlow's version, with a JSON of
its own sha256 beside it, written under temporary names and renamed: the second run converts nothing, and a
damaged file is discarded with a warning and converted again. A model the converter refuses runs with Keras,
and the record says why.
"""

import contextlib
import dataclasses
import hashlib
import io
import os
import sys
import tempfile
import time

from transferlab.runtime import quiet_stderr  # first: TensorFlow starts without its start-up noise

import numpy as np
import tensorflow as tf

from transferlab import errors, files, models
from transferlab.errors import UserError

SETTINGS = ("auto", "keras", "litert")
PACKAGE = "ai-edge-litert==2.3.0"


def interpreter_class():
    """The LiteRT interpreter class, or None when the ai-edge-litert package is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    return Interpreter


class Runner:
    """A .tflite file (or its bytes) run by the LiteRT interpreter with XNNPACK and a thread per core, on numpy
    batches of any size (the input is resized when the batch size changes: only the last batch of a pass)."""

    def __init__(self, path=None, content=None):
        interpreter = interpreter_class()
        if interpreter is None:  # the deprecated copy inside TensorFlow runs the same kernels
            interpreter = tf.lite.Interpreter
        self.interpreter = interpreter(model_path=path, model_content=content, num_threads=os.cpu_count() or 1)
        self.input, self.output = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        self.batch = None

    def __call__(self, x):
        x = np.asarray(x)
        if self.batch != len(x):
            self.interpreter.resize_tensor_input(self.input["index"], [len(x), *x.shape[1:]])
            self.interpreter.allocate_tensors()
            self.batch = len(x)
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"], copy=False))
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]), dtype=np.float32)


def folder():
    return os.path.join(files.cache_dir(), "litert")


def model_key(model):
    """A sha256 of what a converted file depends on: the model's layers (kind, output shape, weights), its
    precision policy, and TensorFlow's version (the converter ships with it)."""
    digest = hashlib.sha256(f"{tf.__version__}\n{model.dtype_policy.name}\n{model.input_shape}\n".encode())
    return models.fingerprint(model, digest).hexdigest()


@contextlib.contextmanager
def converter(model):
    """TensorFlow's LiteRT converter for `model` in inference mode, its options still to set: a SavedModel of one
    function (the model on its input, training=False) and the variables that function reads, in a temporary folder
    that lives as long as the context. `from_keras_model` writes Keras's whole export archive first, tracing every
    layer's functions: 6-11 s for MobileNetV2 where this takes 2-4 s, and the converted file computes the same
    (bit for bit on MobileNetV2's features; tests/test_litert.py)."""
    spec = tf.TensorSpec((None, *model.input_shape[1:]), model.inputs[0].dtype, name="images")
    serve = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)
    module = tf.Module()
    module.read = list(serve.variables)  # tracked, so the SavedModel holds their values
    with tempfile.TemporaryDirectory(prefix="transferlab-convert-") as folder:
        with quiet_stderr():
            tf.saved_model.save(module, folder, signatures=serve)
        yield tf.lite.TFLiteConverter.from_saved_model(folder)


def convert(model):
    """The model as a LiteRT flatbuffer (float32, inference mode), through TensorFlow's converter."""
    with converter(model) as made, contextlib.redirect_stdout(io.StringIO()):  # the converter's trace listing
        return made.convert()


def stored_runner(entry):
    """The converted file of cache `entry` (a path without suffix), or None when there is none or it is damaged
    (then removed, with a warning)."""
    found, damaged = files.read_entry(entry, ".tflite", _read_runner)
    if damaged:
        print(f"warning: discarding a damaged LiteRT file {entry}.tflite ({damaged}); converting again",
              file=sys.stderr)
    return found


def _read_runner(path, meta):
    with open(path, "rb") as f:  # read once, checked, and kept by the interpreter: no later change reaches it
        content = f.read()
    if hashlib.sha256(content).hexdigest() != meta["sha256"]:
        raise ValueError("checksum mismatch")
    return Runner(content=content)


def runner(model, key=None):
    """(Runner, "hit" or "miss", seconds): the model converted, from the cache when it was converted before.
    `key`: the model's model_key, when the caller has it."""
    start = time.perf_counter()
    entry = os.path.join(folder(), key or model_key(model))
    found = stored_runner(entry)
    if found is not None:
        os.utime(f"{entry}.json")
        return found, "hit", time.perf_counter() - start
    flatbuffer = convert(model)
    os.makedirs(folder(), exist_ok=True)
    with files.replacing(f"{entry}.tflite") as tmp, open(tmp, "wb") as f:
        f.write(flatbuffer)
    files.write_json(f"{entry}.json", {"sha256": files.sha256(f"{entry}.tflite"), "bytes": len(flatbuffer),
                                       "model": model.name, "tensorflow": tf.__version__})
    return Runner(content=flatbuffer), "miss", time.perf_counter() - start


@dataclasses.dataclass
class Inference:
    """Which runtime the frozen passes use ("litert" or "keras") and why; the record's "inference_runtime"."""

    setting: str
    chosen: str
    reason: str
    made: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # {model_key: (runner, info)}

    @classmethod
    def choose(cls, setting, replicas=1):
        """`setting` "keras" or "litert" as asked (litert without its package is a UserError); "auto": LiteRT on a
        CPU-only machine with one replica, Keras with a GPU or TPU, several replicas, or no LiteRT package."""
        if setting == "keras":
            return cls(setting, "keras", "asked for")
        installed = interpreter_class() is not None
        if setting == "litert":
            if not installed:
                raise UserError(f"--inference_runtime=litert needs the LiteRT interpreter: pip install {PACKAGE}")
            return cls(setting, "litert", "asked for")
        if tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"):
            return cls(setting, "keras", "a GPU or TPU runs the frozen passes in TensorFlow")
        if replicas > 1:
            return cls(setting, "keras", f"{replicas} replicas share the frozen passes in TensorFlow")
        if not installed:
            return cls(setting, "keras", f"the LiteRT interpreter is not installed (pip install {PACKAGE})")
        return cls(setting, "litert", "CPU only, one replica")

    def record(self):
        return {"setting": self.setting, "chosen": self.chosen, "reason": self.reason}

    def batch_function(self, model):
        """(a function from a numpy batch to the model's numpy outputs in inference mode, info for the phase
        record): LiteRT's Runner when chosen and the model converts, else Keras's predict_on_batch."""
        keras_batch = _keras_batch_function(model)
        if self.chosen != "litert":
            return keras_batch, {"inference_runtime": "keras"}
        key = model_key(model)
        if key not in self.made:  # one runner per model (by content) for this Inference's passes
            try:
                found, status, seconds = runner(model, key)
            except Exception as error:  # a layer the converter cannot take: Keras runs it, and the record says so
                reason = f"LiteRT cannot convert {model.name}: {errors.failure(error)}"
                print(f"warning: {reason}; running it with Keras", file=sys.stderr)
                self.made[key] = keras_batch, {"inference_runtime": "keras", "inference_runtime_fallback": reason}
                return self.made[key]
            self.made[key] = found, {"inference_runtime": "litert", "litert_conversion": status,
                                     "litert_conversion_seconds": round(seconds, 3)}
        return self.made[key]

    def share(self, model, twin):
        """Run `model` with the runner of `twin`, the same network built for any input size
        (backbones.size_free): a run whose input size was measured converts its backbone once. The record of
        `model`'s passes says "litert_conversion": "shared"."""
        run_batch, info = self.batch_function(twin)
        shared = {"litert_conversion": "shared"} if "litert_conversion" in info else {}  # paid by the twin's pass
        self.made[model_key(model)] = run_batch, {**{k: v for k, v in info.items() if not k.startswith("litert_")},
                                                  **shared}


KERAS = Inference("keras", "keras", "default")


def _keras_batch_function(model):
    def run_batch(x):
        if tf.distribute.has_strategy():  # there predict_on_batch gives every replica the whole batch (Keras 3.15)
            return np.asarray(model.predict(x, batch_size=len(x), verbose=0), dtype=np.float32)
        return np.asarray(model.predict_on_batch(x), dtype=np.float32)  # inference mode, no per-call set-up
    return run_batch
