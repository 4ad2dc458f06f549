"""Image folders as people keep them, in the two common layouts, decoded by transferlab.images:

    DATA_DIR/<class>/*.jpg                     class folders: VALIDATION_SPLIT of each class validates
    DATA_DIR/train/<class>/*.jpg               split folders, with validation/ (or val/) and test/ optional;
                                               without validation/, VALIDATION_SPLIT of train/ validates

The share that validates is chosen file by file by a hash of the file's path relative to its class folder
(TF Hub's retrain.py does the same), so adding photos later never moves an old photo between training and
validation. Files that cannot be decoded are skipped and reported, never fatal: a folder of photos gathered
by hand nearly always holds one truncated download or a stray text file. The images are decoded in the
input pipelines, a batch at a time, never the whole folder at once.
"""

import dataclasses
import hashlib
import os
import time

import keras
import numpy as np

from transferlab import duplicates, errors, images, pipelines, sources
from transferlab.errors import UserError, check

TUTORIAL_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
HASH_BUCKETS = 2**32  # a file's hash, as a share of this, decides its split


@dataclasses.dataclass
class Layout:
    """What `layout` found in a folder: which layout, its class names and the folder of each split."""

    root: str
    kind: str  # "class folders" or "split folders"
    classes: list
    train: str  # the folder holding the training classes (root itself for class folders)
    validation: str | None = None  # a validation/ or val/ folder
    test: str | None = None  # a test/ folder

    def describe(self, validation_split):
        if self.kind == "class folders":
            return f"class folders ({len(self.classes)} classes), {validation_split:g} of each validates by file hash"
        splits = ["train/", *(f"{os.path.basename(f)}/" for f in (self.validation, self.test) if f)]
        held = "" if self.validation else f"; {validation_split:g} of train/ validates by file hash"
        return f"split folders {' '.join(splits)} ({len(self.classes)} classes){held}"


def subfolders(folder):
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not images.hidden(e.name))


def class_names(folder):
    """The class folder names under `folder`, sorted (Keras's label order); at least two."""
    check(os.path.isdir(folder), f"image folder {folder!r} does not exist")
    names = subfolders(folder)
    check(len(names) >= 2, f"{folder} has {len(names)} class folder(s) {names}; need at least 2 (<class>/*.jpg)")
    return names


def layout(root):
    """The Layout of `root`: split folders when it has train/, class folders when every subfolder holds
    images; anything else is a UserError that says what was found and what is expected."""
    if os.path.isdir(os.path.join(root, "train")):
        found = {name: os.path.join(root, name) for name in ("validation", "val")
                 if os.path.isdir(os.path.join(root, name))}
        check(len(found) < 2, f"{root} has both validation/ and val/: keep one")
        train = os.path.join(root, "train")
        result = Layout(root, "split folders", class_names(train), train, next(iter(found.values()), None),
                        os.path.join(root, "test") if os.path.isdir(os.path.join(root, "test")) else None)
        for folder in (result.validation, result.test):
            if folder is not None:
                theirs = subfolders(folder)
                check(theirs, f"{folder} holds no class folders (expected {os.path.basename(folder)}/<class>/*.jpg)")
                check(theirs == result.classes, f"{folder} has classes {theirs}, train/ has {result.classes}")
        return result
    names = subfolders(root)
    orphans = [name for name in ("validation", "val", "test") if name in names]
    check(not orphans, f"{root} has {orphans[0]}/ but no train/ folder (expected train/<class>/*.jpg beside it)"
          if orphans else "")
    with_images = [name for name in names if images.files_under(os.path.join(root, name))[0]]
    if names and with_images == names:
        check(len(names) >= 2, f"{root} has 1 class folder {names}; need at least 2 (<class>/*.jpg)")
        return Layout(root, "class folders", names, root)
    entries = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(root) if not images.hidden(e.name))
    shown = ", ".join(entries[:8]) + (f" and {len(entries) - 8} more" if len(entries) > 8 else "") or "nothing"
    empty = sorted(set(names) - set(with_images))
    why = f" ({', '.join(f'{name}/' for name in empty[:4])} hold no images)" if with_images and empty else ""
    raise UserError(f"no image folder in {root}: found {shown}{why}; expected <class>/*.jpg, or train/<class>/*.jpg "
                    f"with optionally validation/<class>/ and test/<class>/")


def find(data_dir, name="cats_and_dogs_filtered", url=TUTORIAL_URL):
    """The image folder to use: `data_dir` itself when it holds a layout, else `data_dir/<name>`. Only when no data
    directory is given at all, the tutorial's zip fetched with `keras.utils.get_file` (cached in
    ~/.keras/datasets): a folder that was given but holds no images is the user's mistake, and training on
    another dataset instead would hide it."""
    if data_dir is not None:
        check(os.path.isdir(data_dir), f"--data_dir={data_dir}: no such folder")
        named = os.path.join(data_dir, name)
        if not os.path.isdir(os.path.join(data_dir, "train")) and os.path.isdir(named):
            return named
        layout(data_dir)  # a UserError that says what is there, when there is no layout
        return data_dir
    try:
        extracted = keras.utils.get_file(f"{name}.zip", origin=url, extract=True)
    except Exception as error:  # no internet, proxy, disk full: all mean "put the folder there yourself"
        raise UserError(
            f"no data directory given (--data_dir= or ${sources.DATA_DIR_ENV}) and the download of {name} from {url} "
            f"failed ({errors.failure(error)}); download it yourself, or pass --data_dir=FOLDER"
        ) from None
    for folder, subfolders_, _ in os.walk(extracted):
        if "train" in subfolders_:
            return folder
    raise UserError(f"the download {extracted} holds no train/ folder")


def hash_share(relative_path):
    """Where a file falls in [0, 1): a function of its path relative to its class folder alone."""
    digest = hashlib.sha1(relative_path.replace(os.sep, "/").encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / HASH_BUCKETS


def split_by_hash(paths, class_folder, share):
    """(train, validation) of one class's files: those whose hash_share is below `share` validate. A class of
    two or more files whose files all hash above it still validates its lowest one, and one whose files all
    hash below it trains on its highest, so no class is missing from either; only that one file can move
    when a file hashing past it is added."""
    shares = [hash_share(os.path.relpath(p, class_folder)) for p in paths]
    held = [s < share for s in shares]
    if len(paths) > 1 and not any(held):
        held[int(np.argmin(shares))] = True
    if len(paths) > 1 and all(held):  # likewise, no class goes without a training image
        held[int(np.argmax(shares))] = False
    return ([p for p, h in zip(paths, held, strict=True) if not h], [p for p, h in zip(paths, held, strict=True) if h])


def listing(found, validation_split):
    """{split: ([paths], [labels])} of a Layout's images, and [(path, reason)] of the files that are not images."""
    splits = {"train": ([], []), "validation": ([], []), **({"test": ([], [])} if found.test else {})}
    not_images = []
    for label, name in enumerate(found.classes):
        folder = os.path.join(found.train, name)
        paths, others = images.files_under(folder)
        not_images += others
        if found.validation:
            parts = {"train": paths}
        else:
            parts = dict(zip(("train", "validation"), split_by_hash(paths, folder, validation_split), strict=True))
        for split, split_folder in (("validation", found.validation), ("test", found.test)):
            if split_folder:
                parts[split], others = images.files_under(os.path.join(split_folder, name))
                not_images += others
        for split, split_paths in parts.items():
            splits[split][0].extend(split_paths)
            splits[split][1].extend([label] * len(split_paths))
    return splits, [(p, "not an image file") for p in not_images]


def read_folder(directory, image_size, validation_split, drop_duplicates=False, later=False):
    """((x_train, y_train), (x_val, y_val), test, info) from an image folder in either layout (see above); test
    is (x_test, y_test) when there is a test/ folder, else None. Each x is an images.Files of the readable files
    (uint8 RGB at image_size x image_size when a pipeline decodes them), so memory does not grow with the
    folder: one pass (`pipelines.scan`) finds the files that cannot be decoded, and they are skipped. info goes
    into the record: where the data came from, its layout, a hash of the files used, class names, counts,
    skipped files, and the duplicates across splits (duplicates.find; with `drop_duplicates`, their copies in
    validation and test are left out). `later` (and not dropping them): the duplicates are looked for in a
    thread while the caller goes on (a folder's first hashing pass takes seconds, beside the backbone's
    conversion it costs next to nothing); info["duplicates"] is then a duplicates.Pending until `settled`."""
    found = layout(directory)
    if not found.validation:
        check(0 < validation_split < 1, f"--validation_split={validation_split}: must be in (0, 1) when "
                                        f"{directory} has no validation/ folder")
    print(f"image folder {directory}: {found.describe(validation_split)}")
    splits, skipped = listing(found, validation_split)
    start = time.perf_counter()
    arrays, files, modes = {}, {}, []
    for split, (paths, labels) in splits.items():
        failed = set(pipelines.scan(paths))
        skipped += [(paths[i], "cannot be decoded") for i in sorted(failed)]
        kept = [i for i in range(len(paths)) if i not in failed]
        files[split] = [(paths[i], os.path.getsize(paths[i]), labels[i]) for i in kept]
        modes += [sources.image_mode(p) for p, _, _ in files[split]]
        splits[split] = ([paths[i] for i in kept], [labels[i] for i in kept])
    listed = {split: paths for split, (paths, _) in splits.items()}
    pending = duplicates.Pending(listed) if later and not drop_duplicates else None
    found_duplicates = duplicates.find(listed) if pending is None else None
    dropped = set(found_duplicates["later_copies"]) if drop_duplicates else set()
    for split, (paths, labels) in splits.items():
        if split != "train" and dropped:
            keep = [i for i, path in enumerate(paths) if path not in dropped]
            paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
            files[split] = [(path, os.path.getsize(path), label) for path, label in zip(paths, labels, strict=True)]
        y = np.array(labels, dtype=np.int64)
        folder = {"train": found.train, "validation": found.validation or found.train, "test": found.test}[split]
        for label, name in enumerate(found.classes):
            check(np.any(y == label), f"{os.path.join(folder, name)} holds no readable images"
                  + (" for validation" if split == "validation" and not found.validation else ""))
        arrays[split] = (images.Files(paths, (image_size, image_size)), y)
    seconds = time.perf_counter() - start
    converted = sources.report_conversions(modes, "RGB", directory)
    if skipped:
        shown = ", ".join(f"{os.path.relpath(p, directory)} ({why})" for p, why in skipped[:10])
        more = f" and {len(skipped) - 10} more (all in the record)" if len(skipped) > 10 else ""
        print(f"warning: skipped {len(skipped)} files: {shown}{more}")
    if pending is None:
        warning = duplicates.describe(found_duplicates, directory)
        if warning:
            print(warning + (f"; dropped {len(dropped)} from validation and test" if dropped else ""))
    held_from = "train/" if found.kind == "split folders" else "each class"
    validation = (f"{os.path.basename(found.validation)}/ folder" if found.validation
                  else f"{validation_split:g} of {held_from}, by file hash")
    info = {
        "source": os.path.abspath(directory),
        "layout": found.kind,
        "sha256": sources.tree_key(directory, files),
        "class_names": found.classes,
        "validation": validation,
        "samples": {split: len(y) for split, (_, y) in arrays.items()},
        "skipped_count": len(skipped),
        "skipped_files": [{"path": os.path.relpath(p, directory), "reason": why} for p, why in skipped],
        "converted_images": converted,  # {colour mode: count} of images converted to RGB
        "scan_seconds": round(seconds, 3),
        "duplicates": pending or duplicates_section(found_duplicates, directory, len(dropped)),
    }
    return arrays["train"], arrays["validation"], arrays.get("test"), info


def duplicates_section(found, directory, dropped=0):
    """The data section's "duplicates": duplicates.find's counts and pairs, paths relative to `directory`."""
    return {**{k: v for k, v in found.items() if k not in ("pairs", "later_copies")},
            "pairs": [{**pair, "a": os.path.relpath(pair["a"], directory), "b": os.path.relpath(pair["b"], directory)}
                      for pair in found["pairs"]],
            "dropped": dropped}


def settled(info):
    """`info` (read_folder's) with its duplicates found: waits for a `later` search, and says what it found."""
    pending = info.get("duplicates")
    if not isinstance(pending, duplicates.Pending):
        return info
    found = pending.result()
    warning = duplicates.describe(found, info["source"])
    if warning:
        print(warning)
    return {**info, "duplicates": duplicates_section(found, info["source"])}
