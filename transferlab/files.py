"""Files written safely and read by checksum: the one atomic-write helper and the one hashing helper.

Every file this project writes (records, weights, histories, caches, plots, benchmark pages) goes through
`replacing`, so a crash or a kill at any moment leaves the old file or the new one, never half of one.
"""

import contextlib
import hashlib
import json
import os
import secrets

CACHE_DIR_ENV = "TRANSFERLAB_CACHE_DIR"  # where caches live (decoded images, features, LiteRT files)
CHUNK = 1 << 24  # bytes read at a time when hashing a file

# The files of a run folder that other commands read, each named once.
RECORD = "record.json"  # the run's record (records.py)
MODEL = "model.keras"  # the final model, taking raw images (classifier.Classifier.save)
LABELS = "labels.txt"  # its outputs' names, one a line


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path beside `path` to write to; on success it is renamed over `path`, on any
    failure removed. The temporary name is unique to this process and call, starts with a dot (hidden from
    listings), and keeps `path`'s file name at its end: Keras insists on ".weights.h5", matplotlib and
    numpy take the format from the suffix."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    tmp = os.path.join(folder, f".{os.getpid()}.{secrets.token_hex(4)}.tmp.{name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    """Write JSON to a temporary file in the same folder, fsync it, then rename it over `path`."""
    with replacing(path) as tmp:
        # O_EXCL: never write into someone else's file; mode 0o666 less the umask, like any new file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())


def write_text(path, text):
    """Write `text` to `path` atomically."""
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def sha256(path):
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def cache_dir():
    """The caches' folder: $TRANSFERLAB_CACHE_DIR, else ~/.cache/transferlab."""
    return os.environ.get(CACHE_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "transferlab")


def read_entry(entry, suffix, read):
    """A cache entry written as `<entry><suffix>` with its JSON `<entry>.json` beside it (its sha256 and what
    else the cache noted): (`read(path, meta)`, None), or (None, None) when there is no entry. A damaged entry,
    one whose `read` raises OSError, ValueError, KeyError or RuntimeError (a checksum that does not match, say),
    is removed: (None, the error), for the caller to warn and compute it again."""
    meta_path, path = f"{entry}.json", f"{entry}{suffix}"
    if not os.path.exists(meta_path):
        return None, None
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        return read(path, meta), None
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        for stale in (meta_path, path):  # the JSON first: without it the entry is gone
            if os.path.exists(stale):
                os.unlink(stale)
        return None, error

