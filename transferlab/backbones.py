"""Pretrained backbones from keras.applications: their weights (ImageNet, a file, or random), the input
pipeline that applies their own preprocessing exactly once, and freezing and unfreezing them safely.

BatchNormalization: in this Keras version, calling a backbone with `training=False` does not keep its
BatchNormalization layers in inference mode once the backbone is unfrozen (measured: every moving statistic
moved in one fine-tuning epoch; docs/design.md). What does hold is that a BatchNormalization layer whose own
`trainable` is False runs in inference mode, so `unfreeze` sets it explicitly.
"""

import os

import keras

from transferlab import compat, files, models, pipelines
from transferlab.errors import UserError, check

APPLICATIONS = {
    "MobileNetV2": (keras.applications.MobileNetV2, keras.applications.mobilenet_v2.preprocess_input, 32),
    "InceptionV3": (keras.applications.InceptionV3, keras.applications.inception_v3.preprocess_input, 75),
}


def preprocess_function(name):
    """The backbone's own `preprocess_input` (for both backbones here: pixels 0..255 to -1..1)."""
    return APPLICATIONS[name][1]


def preprocessing_layers(name):
    """The backbone's preprocessing as Keras layers, for a model that takes raw images: both backbones here
    map pixels 0..255 to -1..1 (their preprocess_input's "tf" mode), x / 127.5 - 1."""
    return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=f"{name.lower()}_preprocessing")]


def imagenet_file(name, image_size, alpha=1.0):
    """The no-top ImageNet weights file Keras downloads into ~/.keras/models for this backbone and size."""
    if name == "MobileNetV2":
        rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    return "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"


def keras_models_dir():
    return os.path.join(os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras"), "models")


def load(name, image_size, weights, cut_at=None, **options):
    """The backbone without its classifier at image_size x image_size RGB (up to the layer `cut_at`, with it:
    `cut`), and where its weights came from.

    `weights` is "imagenet" (Keras's download, cached in ~/.keras/models), a path to a weights file, or
    None (random initialisation, with a warning: there is nothing to transfer). Returns (model, info) with
    info = {backbone, input_size, weights, weights_sha256, layers, cut_layer when cut} for the record.
    """
    application, _, smallest = APPLICATIONS[name]
    check(image_size >= smallest, f"--image_size={image_size}: {name} needs at least {smallest} pixels")
    if weights not in (None, "imagenet"):
        check(os.path.isfile(weights), f"weights file {weights!r} not found (--weights=PATH, imagenet or None)")
    try:
        model = application(input_shape=(image_size, image_size, 3), include_top=False, weights=weights, **options)
    except Exception as error:
        if weights == "imagenet":
            raise UserError(
                f"cannot get the ImageNet weights of {name} ({type(error).__name__}); put Keras's file "
                f"{imagenet_file(name, image_size, **options)} in {keras_models_dir()} or pass --weights=PATH"
            ) from None
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"weights file {weights!r} does not fit {name} without its top ({reason})") from None
    if weights == "imagenet":
        path = os.path.join(keras_models_dir(), imagenet_file(name, image_size, **options))
        source, digest = "imagenet", files.sha256(path) if os.path.isfile(path) else None
    elif weights is None:
        source, digest = "random", None
        print("warning: --weights=None: the backbone is random, so transfer has nothing to transfer and its accuracy "
              "means nothing (the record says weights: random)")
    else:
        source, digest = os.path.abspath(weights), files.sha256(weights)
    info = {"backbone": name, "input_size": image_size, "weights": source, "weights_sha256": digest,
            "layers": len(model.layers), **options}
    if cut_at is not None:
        model = cut(model, cut_at)
        info.update(cut_layer=cut_at, layers=len(model.layers))
    return model, info


def cut(backbone, layer_name):
    """The backbone up to and including the layer `layer_name` (the course recipe stops InceptionV3 at mixed7)."""
    names = [layer.name for layer in backbone.layers]
    check(layer_name in names, f"{backbone.name} has no layer {layer_name!r} (--cut_layer=; e.g. "
                               f"{', '.join(n for n in names if n.startswith('mixed'))})")
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
    """A layer given by index or by name, as an index into backbone.layers."""
    names = [x.name for x in backbone.layers]
    if isinstance(layer, str):
        check(layer in names, f"{backbone.name} has no layer {layer!r} (--fine_tune_at= takes an index or a name)")
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
    """The tensors that layers from `index` on take from layers before it, as {id: tensor}."""
    position = {id(layer): i for i, layer in enumerate(backbone.layers)}
    crossing = {}
    for layer in backbone.layers[index:]:
        for tensor in compat.inbound_tensors(layer):
            if position.get(id(compat.producer(tensor)), index) < index:
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
