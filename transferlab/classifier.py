"""An image classifier in the parts that transfer learning moves, owned by one object (keras-hub's task model):
images -> `features` (a pretrained backbone and its pooling, or a trained network's first layers: frozen in the
transfer phase) -> `head` (what trains), with the `preprocessing` the run applies to raw uint8 images in its
input pipelines. It compiles itself and saves model.keras: a plain Keras model, with the preprocessing inside,
that loads without transferlab. A backbone family enters through backbones.py's table; nothing here changes.

    backbone, info = backbones.load("MobileNetV2", 224, WEIGHTS)
    classifier = Classifier.on_backbone(backbone, keras.layers.GlobalAveragePooling2D(), [output_layer(2)],
                                        backbones.preprocessing_layers("MobileNetV2"))
    classifier.save(folder, ["cat", "dog"], "cats_vs_dogs")       # model.keras, labels.txt
"""

import os

import keras

from transferlab import backbones, files, images, models


class Classifier:
    """`model` (images -> features -> head, `name`) and its parts. `features` None: nothing is frozen and the
    head is the whole network. `backbone` and `pooling` are set for a classifier on a backbone (fine-tuning
    unfreezes the backbone's top and trains it under the same pooling and head)."""

    def __init__(self, image_shape, features, head, preprocessing, backbone=None, pooling=None, name="transfer"):
        self.image_shape = tuple(image_shape)
        self.features, self.head, self.preprocessing = features, head, list(preprocessing)
        self.backbone, self.pooling = backbone, pooling
        self.model = models.stack(self.image_shape, [head] if features is None else [features, head], name=name)

    @classmethod
    def on_backbone(cls, backbone, pooling, head_layers, preprocessing, frozen=True, name="transfer"):
        """`head_layers` on `backbone` -> `pooling` (a layer without weights). A pretrained backbone is `frozen`
        (called in inference mode, backbones.feature_extractor); the scratch baseline's trains whole."""
        features = backbones.feature_extractor(backbone, pooling, frozen)
        head = models.stack(features.output_shape[1:], head_layers, name="head")
        return cls(backbone.input_shape[1:], features, head, preprocessing, backbone, pooling, name)

    @classmethod
    def cut_from(cls, features, count, head_layers, preprocessing, head_name="head_b"):
        """A trained network's `features` (a model of layers) cut after its first `count` layers, which stay
        frozen (models.freeze_first); the layers after them and `head_layers` make the head."""
        frozen, trainable = models.freeze_first(features, count)
        image = features.input_shape[1:]
        head = models.stack(frozen.output_shape[1:] if frozen else image, [*trainable, *head_layers], name=head_name)
        return cls(image, frozen, head, preprocessing)

    def compile(self, learning_rate, optimizer="adam"):
        """models.compile_classifier on the whole model: the loss its output needs, accuracy, `optimizer`."""
        return models.compile_classifier(self.model, learning_rate, optimizer=optimizer)

    def unfreeze(self, start, batchnorm_momentum=None):
        """The backbone's layers from `start` (index or name) on trainable (backbones.unfreeze); returns how many
        with weights."""
        return backbones.unfreeze(self.backbone, start, batchnorm_momentum)

    def for_raw_images(self, name=None):
        """The model as people use it: raw images in (uint8, `image_shape`, as the run decoded them), scaled by
        the `preprocessing` the run applied outside the model, one probability per class out (a one-unit
        sigmoid output becomes two)."""
        inputs = keras.Input(self.image_shape, dtype="uint8", name="image")
        x = inputs
        for layer in self.preprocessing:
            x = layer(x)
        outputs = self.model(x)
        if outputs.shape[-1] == 1:  # P(class 1) -> [P(class 0), P(class 1)]
            outputs = keras.layers.Concatenate(name="probabilities")(
                [keras.layers.Rescaling(-1.0, offset=1.0, name="complement")(outputs), outputs])
        return keras.Model(inputs, outputs, name=name or f"{self.model.name}_classifier")

    def save(self, folder, labels, name):
        """model.keras (for_raw_images, named `name`) and labels.txt (the outputs' names, one a line) in `folder`,
        each written atomically. Returns the record's "model" section."""
        saved = self.for_raw_images(name)
        with files.replacing(os.path.join(folder, files.MODEL)) as tmp:
            saved.save(tmp)
        files.write_text(os.path.join(folder, files.LABELS), "".join(f"{label}\n" for label in labels))
        return {"file": files.MODEL, "labels": files.LABELS,
                "input": {"shape": list(self.image_shape), "dtype": "uint8", "pixels": images.CONTRACT}}
