"""Make the MNIST subset shipped in the package: ``python -m backprop.data.make_subset SRC_DIR``.

From the full MNIST files in SRC_DIR it takes, for each digit, images evenly spaced over that digit's
occurrences in the file (so the subset spans all writers, including the harder second half of the
test set), keeps them in file order, and writes them as uint8 in a compressed .npz with the dataset's
attribution and licence. No randomness: the same files always give the same arrays.

MNIST: Yann LeCun, Corinna Cortes, Christopher J.C. Burges; licensed CC BY-SA 3.0
(https://creativecommons.org/licenses/by-sa/3.0/). The subset is a derivative under the same licence.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from backprop.checkpoint import atomic_write
from backprop.checks import int_arg
from backprop.data.mnist import MNIST, SUBSET_FILE, SUBSET_FORMAT, find_files, read_files

DEFAULT_OUT = Path(__file__).with_name(SUBSET_FILE)
ATTRIBUTION = ("Subset of the MNIST database of handwritten digits by Yann LeCun, Corinna Cortes and "
               "Christopher J.C. Burges, licensed CC BY-SA 3.0 "
               "(https://creativecommons.org/licenses/by-sa/3.0/); this subset is shared under the same licence.")


def balanced_indices(labels: np.ndarray, per_class: int) -> np.ndarray:
    """``per_class`` indices of each label, evenly spaced over its occurrences, in increasing order."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    chosen = []
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        if len(where) < per_class:
            raise ValueError(f"class {c} has only {len(where)} samples, fewer than {per_class}")
        chosen.append(where[np.linspace(0, len(where) - 1, per_class).round().astype(np.int64)])
    return np.sort(np.concatenate(chosen))


def make_subset(src_dir: str | os.PathLike, out: str | os.PathLike = DEFAULT_OUT, train_per_class: int = 600,
                test_per_class: int = 100) -> Path:
    """Write the balanced subset of the MNIST files in ``src_dir`` to ``out`` (atomically)."""
    files = find_files(MNIST.name, src_dir)
    assert files is not None  # find_files raises for an explicit folder without the files
    data = read_files(files, MNIST, str(src_dir))
    tr = balanced_indices(data.y_train, train_per_class)
    te = balanced_indices(data.y_test, test_per_class)
    meta = {"format": SUBSET_FORMAT, "attribution": ATTRIBUTION, "license": "CC BY-SA 3.0",
            "selection": "per class, evenly spaced over its occurrences in the full files, in file order",
            "train_per_class": train_per_class, "test_per_class": test_per_class}
    arrays = {"x_train": data.x_train[tr, 0], "y_train": data.y_train[tr].astype(np.uint8),
              "x_test": data.x_test[te, 0], "y_test": data.y_test[te].astype(np.uint8),
              "meta": np.array(json.dumps(meta))}
    return atomic_write(out, lambda f: np.savez_compressed(f, **arrays))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backprop.data.make_subset", description=__doc__.split("\n")[0])
    parser.add_argument("src_dir", help="folder with the four MNIST IDX files (gzipped or not)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the .npz (default: %(default)s)")
    parser.add_argument("--train-per-class", type=int_arg(1, "a positive integer"), default=600)
    parser.add_argument("--test-per-class", type=int_arg(1, "a positive integer"), default=100)
    args = parser.parse_args(argv)
    try:
        path = make_subset(args.src_dir, args.out, args.train_per_class, args.test_per_class)
    except (ValueError, OSError) as exc:  # IdxError is a ValueError, DatasetNotFoundError an OSError
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
