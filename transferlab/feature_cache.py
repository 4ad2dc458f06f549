"""The frozen-feature cache on disk: TF Hub's bottleneck files, for any frozen feature extractor.

The frozen layers' output for a set of images depends only on the layers (their kind, shapes and
weights) and on the images (their pixels; for image files, their paths, sizes and modification times, so a
hit decodes nothing). Both are hashed into the cache key, so a rerun, a resumed run or a sweep
that changes only the head, its epochs or its learning rate finds the features already computed and
skips extraction entirely; anything that changes them (other weights, another cut, input size,
preprocessing, other images) gives another key.

Each entry is `<key>.npy` (float32, written batch by batch into a memory-mapped file, so extracting
100,000 x 1280 features never holds them all in memory) and `<key>.json` (shape and the .npy's sha256).
Both are written under temporary names and renamed, the JSON last: an entry without its JSON does not
exist. On a hit the checksum is verified; a damaged entry is discarded with a warning and rebuilt.
"""

import hashlib
import os
import time

import numpy as np

from transferlab import files, litert, models, pipelines, progress
from transferlab import images as image_files

LIMIT_ENV = "TRANSFERLAB_FEATURE_CACHE_GB"  # the cache's size limit; least recently used entries go first
DEFAULT_LIMIT_GB = 10


def folder():
    return os.path.join(files.cache_dir(), "features")


def key(frozen, images, preprocessing, runtime="keras"):
    """The cache key: a sha256 of the frozen model's layers (class, output shape, weights), the images
    (their bytes and shape, as they enter the pipeline; for images.Files, the files' paths, sizes and
    modification times: no pixel is decoded on a hit), the name of the preprocessing applied and the
    float policy the layers compute in (mixed precision gives other features), and the runtime that computed
    them (LiteRT's features differ from Keras's in the fifth decimal)."""
    digest = hashlib.sha256()
    digest.update(f"{preprocessing}\n{images.shape}\n{images.dtype}\n{frozen.dtype_policy.name}\n".encode())
    if runtime != "keras":  # so that the Keras path's entries keep the keys they had
        digest.update(f"runtime {runtime}\n".encode())
    models.fingerprint(frozen, digest)
    if isinstance(images, image_files.Files):
        digest.update(images.digest().encode())
    else:
        digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def stored_features(entry):
    """The cached features of `entry` (a path without suffix) as a read-only memory map, or None when
    there is no entry or it is damaged (then it is removed, with a warning)."""
    features, damaged = files.read_entry(entry, ".npy", _read_features)
    if damaged:
        print(f"warning: discarding a damaged feature cache entry {entry}.npy ({damaged}); extracting again")
    return features


def _read_features(path, meta):
    if files.sha256(path) != meta["sha256"]:
        raise ValueError("checksum mismatch")
    features = np.load(path, mmap_mode="r", allow_pickle=False)
    if list(features.shape) != meta["shape"]:
        raise ValueError(f"shape {features.shape}, expected {meta['shape']}")
    return features


def extract(frozen, batches, count, entry, run_batch=None, known=None):
    """Run `frozen` in inference mode over `batches` (images, or (images, labels) pairs; `count` images
    in all), writing the features batch by batch into the cache entry's memory-mapped .npy; returns
    them as a read-only memory map. `run_batch` (litert.Inference.batch_function) runs a batch; None: Keras.
    `known`: (indices, their features), rows this very network computed already: `batches` then hold only the
    other images, in order, and the entry gets both."""
    run_batch = run_batch or litert.KERAS.batch_function(frozen)[0]
    batches = pipelines.numpy_batches(batches)
    positions = np.arange(count) if known is None else np.setdiff1d(np.arange(count), known[0])
    os.makedirs(os.path.dirname(entry), exist_ok=True)
    with files.replacing(f"{entry}.npy") as tmp, progress.Progress("features extracted", len(positions)) as shown:
        out, done = None, 0
        if known is not None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, *known[1].shape[1:]))
            out[known[0]] = known[1]
        for batch in batches:
            images = batch[0] if isinstance(batch, tuple) else batch
            result = run_batch(np.asarray(images))
            if out is None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, *result.shape[1:]))
            out[positions[done:done + len(result)]] = result
            done += len(result)
            shown.add(len(result))
        if done != len(positions):
            raise ValueError(f"the pipeline gave {done} images, expected {len(positions)}")
        out.flush()
        shape = list(out.shape)
        del out  # close the memory map before renaming the file
        checksum = files.sha256(tmp)
    files.write_json(f"{entry}.json", {"shape": shape, "dtype": "float32", "sha256": checksum})
    return np.load(f"{entry}.npy", mmap_mode="r", allow_pickle=False)


def trim(limit_bytes):
    """Remove the least recently used entries until the cache holds at most `limit_bytes`."""
    entries = []
    for name in os.listdir(folder()):
        if name.endswith(".json"):
            entry = os.path.join(folder(), name[:-len(".json")])
            try:
                entries.append((os.path.getmtime(f"{entry}.json"), os.path.getsize(f"{entry}.npy"), entry))
            except OSError:  # removed meanwhile by another run
                continue
    total = sum(size for _, size, _ in entries)
    for _, size, entry in sorted(entries):
        if total <= limit_bytes:
            break
        for path in (f"{entry}.json", f"{entry}.npy"):  # the JSON first: without it the entry is gone
            if os.path.exists(path):
                os.unlink(path)
        total -= size


def cached(frozen, images, batches, preprocessing, inference=litert.KERAS, known=None):
    """The frozen features of `images` from the disk cache, extracted (from `batches`, by the runtime that
    `inference`, a litert.Inference, chose) on a miss: (features as a read-only memory map, "hit" or "miss",
    seconds spent, info for the record: the runtime that computed them). `known`: as extract's (then `batches`
    hold the other images only)."""
    start = time.perf_counter()
    entry = os.path.join(folder(), key(frozen, images, preprocessing, inference.chosen))
    features = stored_features(entry)
    if features is not None:
        os.utime(f"{entry}.json")  # recently used: the last to be trimmed
        return features, "hit", time.perf_counter() - start, {"inference_runtime": inference.chosen}
    run_batch, info = inference.batch_function(frozen)
    if info["inference_runtime"] != inference.chosen:  # fell back to Keras: file the features under its key
        entry = os.path.join(folder(), key(frozen, images, preprocessing, info["inference_runtime"]))
    features = extract(frozen, batches, len(images), entry, run_batch, known)
    trim(float(os.environ.get(LIMIT_ENV, DEFAULT_LIMIT_GB)) * 1e9)
    return features, "miss", time.perf_counter() - start, info
