"""The same photo in two splits: found while an image folder is scanned, because a duplicate across splits
inflates every number a run reports.

    python -m transferlab.duplicates FOLDER [--validation_split=0.2]

Exact duplicates have the same bytes (sha256). Near duplicates are the same picture re-encoded or resized: their
perceptual hashes (imagehash's pHash, 64 bits, of the image decoded at a reduced scale) differ in at most NEAR
bits. Only pairs in different splits count (train-validation, train-test, validation-test): copies inside one
split cost nothing but time. Each file's hashes are cached by path, size and modification time, so a rerun
hashes only what changed.
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import time

import numpy as np

from transferlab import files, process, progress
from transferlab.errors import check

NEAR = 4  # bits of 64 in which two pHashes of one picture may differ (re-encoding or resizing moves a few)
PAIRS_KEPT = 100  # pairs listed in the record at most (all are counted)
SPLITS = ("train", "validation", "test")


def hashes_of(path):
    """(sha256 of the bytes, pHash as 8 bytes) of one image file."""
    import imagehash
    from PIL import Image

    with open(path, "rb") as f:
        data = f.read()
    with Image.open(path) as image:
        image.draft("L", (64, 64))  # JPEGs decode at 1/8 scale: pHash looks at 32 x 32 pixels anyway
        bits = imagehash.phash(image.convert("L")).hash.flatten()
    return hashlib.sha256(data).hexdigest(), np.packbits(bits).tobytes().hex()


def _cache_path():
    return os.path.join(files.cache_dir(), "hashes.json")


def hash_files(paths, shown=True):
    """{path: (sha256, phash hex)} of `paths`, from the cache when a file's size and mtime are unchanged; the
    progress `shown` (not from a thread in the background, whose lines would cut into the run's)."""
    cached = {}
    try:
        with open(_cache_path(), encoding="utf-8") as f:
            cached = json.load(f)
    except (OSError, ValueError):
        pass
    stale = []
    for path in paths:
        stat = os.stat(path)
        entry = cached.get(os.path.abspath(path))
        if entry is None or entry[0] != stat.st_size or entry[1] != stat.st_mtime_ns:
            stale.append((path, stat))

    def hashed(item):
        path, stat = item
        try:
            return path, [stat.st_size, stat.st_mtime_ns, *hashes_of(path)]
        except (OSError, ValueError):  # unreadable by Pillow: not comparable
            return path, [stat.st_size, stat.st_mtime_ns, None, None]

    with progress.Progress("hashed", len(stale) if shown else 0) as counted, \
            concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Pillow decodes without the GIL
        for path, entry in pool.map(hashed, stale):
            cached[os.path.abspath(path)] = entry
            counted.add(1)
    fresh = len(stale)
    found = {path: tuple(cached[os.path.abspath(path)][2:]) for path in paths}
    if fresh:
        try:
            os.makedirs(files.cache_dir(), exist_ok=True)
            files.write_json(_cache_path(), cached)
        except OSError as error:  # a read-only cache costs only time
            print(f"warning: could not write the hash cache {_cache_path()}: {error.strerror}")
    return found


def _near_pairs(a_paths, b_paths, hashed, near):
    """(a, b, bits) for each pair whose pHashes differ in at most `near` bits. Cut into near + 1 pieces, two such
    hashes agree on at least one piece exactly: candidates come from a lookup of each piece, then are measured."""
    pieces = [(64 * i // (near + 1), 64 * (i + 1) // (near + 1)) for i in range(near + 1)]

    def keys(value):
        return [(i, (value >> low) & ((1 << (high - low)) - 1)) for i, (low, high) in enumerate(pieces)]

    a_values = [int(hashed[p][1], 16) for p in a_paths]
    index = {}
    for row, value in enumerate(a_values):
        for key in keys(value):
            index.setdefault(key, []).append(row)
    for b in b_paths:
        value = int(hashed[b][1], 16)
        candidates = {row for key in keys(value) for row in index.get(key, ())}
        for row in sorted(candidates):
            bits = (a_values[row] ^ value).bit_count()
            if bits <= near:
                yield a_paths[row], b, bits


def find(splits, near=NEAR, shown=True):
    """Pairs of files in different splits that are the same photo. `splits`: {split: [path, ...]}. Returns
    {"exact": count, "near": count, "pairs": [{"a", "b", "splits", "kind", "bits"}, ...] (the first
    PAIRS_KEPT, exact first), "seconds"}; each pair's `b` is the copy in the later split."""
    start = time.perf_counter()
    order = [s for s in SPLITS if splits.get(s)]
    hashed = hash_files([p for s in order for p in splits[s]], shown)
    pairs = []
    for i, first in enumerate(order):
        for second in order[i + 1:]:
            a_paths = [p for p in splits[first] if hashed[p][0] is not None]
            b_paths = [p for p in splits[second] if hashed[p][0] is not None]
            if not a_paths or not b_paths:
                continue
            by_sha = {}
            for p in a_paths:
                by_sha.setdefault(hashed[p][0], p)
            exact = set()
            for p in b_paths:
                if hashed[p][0] in by_sha:
                    pairs.append({"a": by_sha[hashed[p][0]], "b": p, "splits": [first, second], "kind": "exact",
                                  "bits": 0})
                    exact.add(p)
            for a, b, bits in _near_pairs(a_paths, b_paths, hashed, near):
                if b not in exact:
                    pairs.append({"a": a, "b": b, "splits": [first, second], "kind": "near", "bits": bits})
    pairs.sort(key=lambda p: (p["kind"] != "exact", p["bits"]))
    return {"exact": sum(p["kind"] == "exact" for p in pairs), "near": sum(p["kind"] == "near" for p in pairs),
            "near_bits": near, "pairs": pairs[:PAIRS_KEPT], "later_copies": sorted({p["b"] for p in pairs}),
            "seconds": round(time.perf_counter() - start, 3)}


class Pending:
    """`find` of `splits` running in a thread of its own from now on; `result()` waits for it (and raises what
    it raised)."""

    def __init__(self, splits, near=NEAR):
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="duplicates")
        self._future = self._pool.submit(find, splits, near, False)
        self._pool.shutdown(wait=False)

    def result(self):
        return self._future.result()


def describe(found, root=None):
    """One line for the run's output: what was found, or that nothing was."""
    def name(path):
        return os.path.relpath(path, root) if root else path
    if not found["exact"] and not found["near"]:
        return None
    shown = ", ".join(f"{name(p['a'])} = {name(p['b'])}" for p in found["pairs"][:3])
    return (f"warning: {found['exact']} exact and {found['near']} near duplicates across splits (e.g. {shown}); "
            f"they inflate validation and test scores: --drop_duplicates=True drops the later copies")


def main(argv=None):
    from transferlab import folders

    parser = argparse.ArgumentParser(prog="python -m transferlab.duplicates", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="an image folder (class folders or split folders)")
    parser.add_argument("--validation_split", type=float, default=0.2, help="as the scripts' (default 0.2)")
    parser.add_argument("--near", type=int, default=NEAR, help=f"pHash bits that may differ (default {NEAR})")
    args = parser.parse_args(argv)
    process.install()
    check(os.path.isdir(args.folder), f"image folder {args.folder!r} does not exist")
    found_layout = folders.layout(args.folder)
    splits, _ = folders.listing(found_layout, args.validation_split)
    found = find({split: paths for split, (paths, _) in splits.items()}, args.near)
    print(f"{found['exact']} exact and {found['near']} near duplicates across splits "
          f"({found['seconds']:.1f} s; near: pHash within {args.near} bits)")
    for pair in found["pairs"]:
        a, b = (os.path.relpath(pair[side], args.folder) for side in ("a", "b"))
        print(f"   {pair['kind']:<5} {pair['bits']:>2} bits  {pair['splits'][0]} {a}  =  {pair['splits'][1]} {b}")
    if len(found["later_copies"]) > len(found["pairs"]):
        print(f"   ... {found['exact'] + found['near'] - len(found['pairs'])} more pairs")


if __name__ == "__main__":
    process.command(main)
