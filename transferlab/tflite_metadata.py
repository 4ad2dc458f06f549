"""Metadata inside a .tflite file: the class names and what the model takes and returns, where MediaPipe's
tasks, the LiteRT Support Library and Android Studio look for them.

The format is TFLite's public metadata schema (metadata_schema.fbs of tensorflow/tflite-support, also in
mediapipe's wheel): a ModelMetadata flatbuffer (file identifier "M001") in a model buffer that the model's
metadata list names TFLITE_METADATA, and the files it mentions (labels.txt) in a zip archive appended to the
model. The writers that implement it do not install here (mediapipe 1.2.2's does not import; tflite-support
pins protobuf 3.20.3, which TensorFlow 2.21 refuses), so this writes the few tables an image classifier needs
with flatbuffers' builder, and `read` reads them back for the export's check.
"""

import dataclasses
import io
import zipfile

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import number_types

from transferlab.errors import UserError

METADATA_NAME = b"TFLITE_METADATA"
IDENTIFIER = b"M001"
PARSER_VERSION = "1.0.0"  # the schema version whose fields are all this file uses
LABELS = "labels.txt"
# Enum values of metadata_schema.fbs.
RGB, GRAYSCALE = 1, 2
TENSOR_AXIS_LABELS = 2
FEATURE_PROPERTIES, IMAGE_PROPERTIES = 1, 2  # ContentProperties union members
# Field slots (declaration order; a union takes two: its type, then its value).
FILE = {"name": 0, "description": 1, "type": 2}
CONTENT = {"type": 0, "properties": 1}
IMAGE = {"color_space": 0, "default_size": 1}
SIZE = {"width": 0, "height": 1}
STATS = {"max": 0, "min": 1}
TENSOR = {"name": 0, "description": 1, "content": 3, "stats": 5, "associated_files": 6}
SUBGRAPH = {"name": 0, "description": 1, "inputs": 2, "outputs": 3}
MODEL = {"name": 0, "description": 1, "version": 2, "subgraphs": 3, "author": 4, "license": 5,
         "min_parser_version": 7}


@dataclasses.dataclass
class Description:
    """What an image classifier's metadata says."""

    name: str
    description: str
    version: str
    author: str
    license: str | None
    labels: list
    size: tuple  # (height, width) of the input image
    channels: int  # 3: RGB, 1: grayscale
    input_description: str
    output_description: str


def _table(builder, slots, fields):
    """A table with `fields` {slot: (kind, value)}, kind "offset", "byte" or "uint": children made before."""
    builder.StartObject(max(slots.values()) + 1)
    for slot, (kind, value) in fields.items():
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "byte":
            builder.PrependUint8Slot(slot, value, 0)
        else:
            builder.PrependUint32Slot(slot, value, 0)
    return builder.EndObject()


def _offsets(builder, offsets):
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _stats(builder, low, high):
    top = builder.CreateNumpyVector(np.array([high], np.float32))
    bottom = builder.CreateNumpyVector(np.array([low], np.float32))
    return _table(builder, STATS, {STATS["max"]: ("offset", top), STATS["min"]: ("offset", bottom)})


def build(info):
    """The ModelMetadata flatbuffer (bytes) of `info`, a Description."""
    b = flatbuffers.Builder(1024)
    s = b.CreateString
    # The input: an image of the model's size, uint8 0-255.
    height, width = info.size
    size = _table(b, SIZE, {SIZE["width"]: ("uint", width), SIZE["height"]: ("uint", height)})
    image = _table(b, IMAGE, {IMAGE["color_space"]: ("byte", RGB if info.channels == 3 else GRAYSCALE),
                              IMAGE["default_size"]: ("offset", size)})
    content = _table(b, CONTENT, {CONTENT["type"]: ("byte", IMAGE_PROPERTIES),
                                  CONTENT["properties"]: ("offset", image)})
    fields = {TENSOR["name"]: ("offset", s("image")), TENSOR["description"]: ("offset", s(info.input_description)),
              TENSOR["content"]: ("offset", content), TENSOR["stats"]: ("offset", _stats(b, 0.0, 255.0))}
    tensor_in = _table(b, TENSOR, fields)
    # The output: one probability per class, the class names in labels.txt, the output's axis labels.
    labels = _table(b, FILE, {FILE["name"]: ("offset", s(LABELS)),
                              FILE["description"]: ("offset", s("the class names, one a line, in output order")),
                              FILE["type"]: ("byte", TENSOR_AXIS_LABELS)})
    b.StartObject(0)  # FeatureProperties: an empty table
    features = b.EndObject()
    content = _table(b, CONTENT, {CONTENT["type"]: ("byte", FEATURE_PROPERTIES),
                                  CONTENT["properties"]: ("offset", features)})
    fields = {TENSOR["name"]: ("offset", s("probability")),
              TENSOR["description"]: ("offset", s(info.output_description)),
              TENSOR["content"]: ("offset", content), TENSOR["stats"]: ("offset", _stats(b, 0.0, 1.0)),
              TENSOR["associated_files"]: ("offset", _offsets(b, [labels]))}
    tensor_out = _table(b, TENSOR, fields)
    subgraph = _table(b, SUBGRAPH, {SUBGRAPH["name"]: ("offset", s("image_classifier")),
                                    SUBGRAPH["inputs"]: ("offset", _offsets(b, [tensor_in])),
                                    SUBGRAPH["outputs"]: ("offset", _offsets(b, [tensor_out]))})
    fields = {MODEL[key]: ("offset", s(getattr(info, key))) for key in ("name", "description", "version", "author",
                                                                        "license") if getattr(info, key) is not None}
    fields[MODEL["subgraphs"]] = ("offset", _offsets(b, [subgraph]))
    fields[MODEL["min_parser_version"]] = ("offset", s(PARSER_VERSION))
    b.Finish(_table(b, MODEL, fields), file_identifier=IDENTIFIER)
    return bytes(b.Output())


class _AlignedBuffer(schema.BufferT):
    """A model buffer packed on a 16-byte boundary, as the schema's force_align asks (the generated Pack
    aligns to 1): weights stay where XNNPACK and mmap expect them."""

    def Pack(self, builder):
        data = None
        if self.data is not None and len(self.data):
            payload = np.asarray(self.data, np.uint8).tobytes()
            builder.StartVector(1, len(payload), 16)
            builder.head -= len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


def attach(model, info):
    """The .tflite bytes `model` with `info`'s metadata in it and labels.txt appended (any earlier metadata
    replaced)."""
    unpacked = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    if any(buffer.offset > 1 for buffer in unpacked.buffers):  # weights stored after the flatbuffer (over 2 GB)
        raise UserError("this .tflite keeps its weights outside its flatbuffer: no metadata can be added")
    buffers = []
    for buffer in unpacked.buffers:
        aligned = _AlignedBuffer()
        aligned.data = buffer.data
        buffers.append(aligned)
    unpacked.buffers = buffers
    meta = _AlignedBuffer()
    meta.data = np.frombuffer(build(info), np.uint8)
    unpacked.buffers.append(meta)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(unpacked.buffers) - 1
    unpacked.metadata = [m for m in (unpacked.metadata or []) if m.name != METADATA_NAME] + [entry]
    builder = flatbuffers.Builder(len(model) + len(meta.data) + 4096)
    builder.Finish(unpacked.Pack(builder), file_identifier=b"TFL3")
    out = io.BytesIO(bytes(builder.Output()))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:  # after the model, as TFLite's populator
        archive.writestr(LABELS, "".join(f"{label}\n" for label in info.labels))
    return out.getvalue()


class _Table:
    """Fields of one flatbuffer table, by slot."""

    def __init__(self, buf, pos):
        self.t = flatbuffers.table.Table(buf, pos)

    def _at(self, slot):
        return self.t.Offset(4 + 2 * slot)

    def string(self, slot):
        at = self._at(slot)
        return self.t.String(at + self.t.Pos).decode("utf-8") if at else None

    def byte(self, slot):
        at = self._at(slot)
        return self.t.Get(number_types.Uint8Flags, at + self.t.Pos) if at else 0

    def uint(self, slot):
        at = self._at(slot)
        return self.t.Get(number_types.Uint32Flags, at + self.t.Pos) if at else 0

    def table(self, slot):
        at = self._at(slot)
        return _Table(self.t.Bytes, self.t.Indirect(at + self.t.Pos)) if at else None

    def tables(self, slot):
        at = self._at(slot)
        if not at:
            return []
        start = self.t.Vector(at)
        return [_Table(self.t.Bytes, self.t.Indirect(start + 4 * i)) for i in range(self.t.VectorLen(at))]

    def floats(self, slot):
        at = self._at(slot)
        return self.t.GetVectorAsNumpy(number_types.Float32Flags, at).tolist() if at else []


def _tensor(table):
    content = table.table(TENSOR["content"])
    found = {"name": table.string(TENSOR["name"]), "description": table.string(TENSOR["description"])}
    if content is not None and content.byte(CONTENT["type"]) == IMAGE_PROPERTIES:
        image = content.table(CONTENT["properties"])
        size = image.table(IMAGE["default_size"])
        found["color_space"] = {RGB: "RGB", GRAYSCALE: "GRAYSCALE"}.get(image.byte(IMAGE["color_space"]), "UNKNOWN")
        if size is not None:
            found["default_size"] = [size.uint(SIZE["height"]), size.uint(SIZE["width"])]
    stats = table.table(TENSOR["stats"])
    if stats is not None:
        found["range"] = [stats.floats(STATS["min"]), stats.floats(STATS["max"])]
    found["associated_files"] = [{"name": f.string(FILE["name"]), "type": f.byte(FILE["type"])}
                                 for f in table.tables(TENSOR["associated_files"])]
    return found


def read(model):
    """What the .tflite bytes `model` say of themselves: {name, description, version, author, license,
    min_parser_version, input, output, files: {name: bytes}}; None without metadata."""
    root = schema.Model.GetRootAs(model, 0)
    index = next((root.Metadata(i).Buffer() for i in range(root.MetadataLength())
                  if root.Metadata(i).Name() == METADATA_NAME), None)
    if index is None:
        return None
    meta = root.Buffers(index).DataAsNumpy().tobytes()
    if meta[4:8] != IDENTIFIER:
        raise ValueError(f"the {METADATA_NAME.decode()} buffer is not TFLite metadata (identifier {meta[4:8]!r})")
    top = _Table(meta, flatbuffers.encode.Get(flatbuffers.packer.uoffset, meta, 0))
    found = {key: top.string(MODEL[key]) for key in ("name", "description", "version", "author", "license",
                                                     "min_parser_version")}
    subgraph = top.tables(MODEL["subgraphs"])[0]
    found["input"] = [_tensor(t) for t in subgraph.tables(SUBGRAPH["inputs"])]
    found["output"] = [_tensor(t) for t in subgraph.tables(SUBGRAPH["outputs"])]
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            found["files"] = {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        found["files"] = {}
    return found
