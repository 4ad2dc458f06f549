"""The two low-resolution photo folders the folder recipe's choice is measured on (docs/results.md, "A default
that fits the photos"), made from the datasets folder (`$TRANSFER_DATA_DIR`, ../shared/datasets here):

    python -m bench.folders OUT --data_dir=/data/datasets

- OUT/cifar4/<class>/NNNN.jpg: 4 CIFAR-10 classes (airplane, automobile, deer, horse), the first 500 JPEGs of
  each class of the CIFAR-10 (JPEG copy) tree's train/ folder, byte for byte (32 px);
- OUT/digits/<digit>/NNNN.png: the first 200 training digits of each class of mnist.npz as 28-px grayscale PNGs.

Both in the class-folder layout, so the default command validates 20% of each class by file hash.
"""

import argparse
import os
import shutil
import sys

import numpy as np
from PIL import Image

CIFAR_CLASSES = ("airplane", "automobile", "deer", "horse")
CIFAR_PER_CLASS = 500
DIGITS_PER_CLASS = 200


def cifar4(data_dir, out, per_class=CIFAR_PER_CLASS):
    for name in CIFAR_CLASSES:
        source = os.path.join(data_dir, "cifar10", "train", name)
        os.makedirs(os.path.join(out, name), exist_ok=True)
        for file in sorted(os.listdir(source))[:per_class]:
            shutil.copyfile(os.path.join(source, file), os.path.join(out, name, file))


def digits(data_dir, out, per_class=DIGITS_PER_CLASS):
    with np.load(os.path.join(data_dir, "mnist.npz"), allow_pickle=False) as data:
        x, y = data["x_train"], data["y_train"]
    for digit in range(10):
        os.makedirs(os.path.join(out, str(digit)), exist_ok=True)
        for i, index in enumerate(np.flatnonzero(y == digit)[:per_class]):
            Image.fromarray(x[index], "L").save(os.path.join(out, str(digit), f"{i:04d}.png"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.folders", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write cifar4/ and digits/ into")
    parser.add_argument("--data_dir", default=os.environ.get("TRANSFER_DATA_DIR"),
                        help="the datasets folder: cifar10/ and mnist.npz ($TRANSFER_DATA_DIR)")
    args = parser.parse_args(argv)
    if not args.data_dir or not os.path.isdir(os.path.join(args.data_dir, "cifar10", "train")):
        print(f"error: --data_dir={args.data_dir}: expected a folder with cifar10/train/ and mnist.npz",
              file=sys.stderr)
        return 2
    cifar4(args.data_dir, os.path.join(args.out, "cifar4"))
    digits(args.data_dir, os.path.join(args.out, "digits"))
    print(f"{args.out}/cifar4: {len(CIFAR_CLASSES)} x {CIFAR_PER_CLASS} JPEGs; {args.out}/digits: 10 x "
          f"{DIGITS_PER_CLASS} PNGs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
