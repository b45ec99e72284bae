"""MNIST and Fashion-MNIST: found on disk, in the cache or downloaded, plus a small MNIST inside the package.

Where the four IDX files come from, in order: the ``data_dir`` argument, else ``$BACKPROP_DATA``;
then the cache folder (``$XDG_CACHE_HOME/backprop/NAME``, by default ``~/.cache/backprop/NAME``); then
a download from the dataset's public mirrors, verified by SHA-256. In a given folder the files may sit
directly or in a subfolder named after the dataset (``mnist/``, ``fashion-mnist/``), gzipped or not.

The embedded subset (:func:`load_mnist_subset`) is 6,000 training and 1,000 test images of MNIST,
balanced over the digits, made by ``python -m backprop.data.make_subset``; it lets the main examples
run offline. MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, licensed CC BY-SA 3.0;
Fashion-MNIST is by Zalando Research (Han Xiao, Kashif Rasul, Roland Vollgraf), MIT licence.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from backprop.data.download import DownloadError, download
from backprop.data.idx import IdxError, encode_idx, read_idx

ENV_VAR = "BACKPROP_DATA"
PARTS = ("train_images", "train_labels", "test_images", "test_labels")
STEMS = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
SUBSET_FILE = "mnist_subset.npz"
SUBSET_FORMAT = "backprop.mnist-subset/1"
MAX_IMAGES = 600_000  # ten times MNIST's training set: bounds what a (forged) header can make us read


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are in none of the places looked at; the message says where to put them."""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of four IDX files: where to download them and the SHA-256 sums that verify them."""

    name: str
    title: str
    mirrors: tuple[str, ...]
    sha256: dict[str, tuple[str, ...]]  # part -> accepted sums (of the uncompressed or the .gz file)
    classes: tuple[str, ...]
    credit: str


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/",
             "http://yann.lecun.com/exdb/mnist/"),
    # Sums of the uncompressed originals: mirrors recompress, so their .gz files differ.
    sha256={"train_images": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",),
            "train_labels": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",),
            "test_images": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",),
            "test_labels": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",)},
    classes=tuple(str(d) for d in range(10)),
    credit="MNIST: Yann LeCun, Corinna Cortes, Christopher J.C. Burges; CC BY-SA 3.0",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    # Sums of the published .gz files (both mirrors serve the same files).
    sha256={"train_images": ("08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",),
            "train_labels": ("b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",),
            "test_images": ("78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",),
            "test_labels": ("42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",)},
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
    credit="Fashion-MNIST: Zalando Research (Han Xiao, Kashif Rasul, Roland Vollgraf); MIT licence",
)

DATASETS: dict[str, DatasetSpec] = {MNIST.name: MNIST, FASHION_MNIST.name: FASHION_MNIST}


@dataclass(frozen=True)
class Dataset:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 for training and test, and where they came from."""

    spec: DatasetSpec
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # a folder, or "embedded subset"

    @property
    def name(self) -> str:
        return self.spec.name


def spec(name: str) -> DatasetSpec:
    """The dataset called ``name`` ("mnist" or "fashion-mnist")."""
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[key]


def cache_dir(name: str) -> Path:
    """Where downloads of dataset ``name`` are kept: ``$XDG_CACHE_HOME/backprop/NAME``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "backprop" / name


def _files_in(folder: Path, ds: DatasetSpec) -> dict[str, Path] | None:
    """The four files of ``ds`` in ``folder`` or ``folder/NAME`` (raw or .gz), or None if any is missing."""
    for where in (folder / ds.name, folder):
        found = {}
        for part in PARTS:
            for candidate in (where / STEMS[part], where / f"{STEMS[part]}.gz"):
                if candidate.is_file():
                    found[part] = candidate
                    break
        if len(found) == len(PARTS):
            return found
    return None


def find_files(name: str, data_dir: str | os.PathLike | None = None,
               cache: str | os.PathLike | None = None) -> dict[str, Path] | None:
    """The four files of dataset ``name`` in ``data_dir`` (else ``$BACKPROP_DATA``) or the cache, or None.

    An explicit ``data_dir`` that lacks them is an error rather than a reason to look elsewhere.
    """
    ds = spec(name)
    if data_dir is not None:
        found = _files_in(Path(data_dir), ds)
        if found is None:
            raise DatasetNotFoundError(f"{ds.title} files not found in {data_dir}: " + _where_to_put(ds))
        return found
    folders = [Path(os.environ[ENV_VAR])] if os.environ.get(ENV_VAR) else []
    folders.append(Path(cache) if cache is not None else cache_dir(ds.name))
    for folder in folders:
        found = _files_in(folder, ds)
        if found is not None:
            return found
    return None


def _where_to_put(ds: DatasetSpec) -> str:
    names = ", ".join(f"{STEMS[p]}.gz" for p in PARTS)
    return (f"put {names} (gzipped or not) in a folder and pass it as data_dir (--data-dir on the command "
            f"line) or set {ENV_VAR} to it; or place them in {cache_dir(ds.name)}")


def _check_not_another_dataset(labels: Path, array: np.ndarray, ds: DatasetSpec) -> None:
    """MNIST and Fashion-MNIST files have the same names and shapes: tell them apart by the labels' sums.

    Known sums are of the file as published or of its decompressed bytes; as the IDX reader takes no
    byte beyond the data, the latter are exactly ``encode_idx(array)``, and the file is hashed in chunks.
    """
    raw = hashlib.sha256()
    with open(labels, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            raw.update(chunk)
    sums = {raw.hexdigest(), hashlib.sha256(encode_idx(array)).hexdigest()}
    for other in DATASETS.values():
        if other is not ds and sums & set(other.sha256["train_labels"]):
            raise IdxError(f"{labels}: these are {other.title} files, not {ds.title}: put the {ds.title} files in "
                           f"their own folder (or a {ds.name}/ subfolder of {ENV_VAR}) and point there")


def read_files(files: dict[str, Path], ds: DatasetSpec, source: str | None = None) -> Dataset:
    """Read and check the four IDX files: 28x28 uint8 images, uint8 labels in range, matching counts.

    ``source`` (default: the absolute path of their folder) is recorded as where they came from."""
    if source is None:
        source = str(files["train_images"].parent.resolve())
    arrays = {part: read_idx(path, MAX_IMAGES * (28 * 28 if part.endswith("images") else 1))
              for part, path in files.items()}
    _check_not_another_dataset(files["train_labels"], arrays["train_labels"], ds)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        ipath, lpath = files[f"{split}_images"], files[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise IdxError(f"{ipath}: expected uint8 images of shape (N, 28, 28), found {images.dtype} "
                           f"{images.shape}")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise IdxError(f"{lpath}: expected uint8 labels of shape (N,), found {labels.dtype} {labels.shape}")
        if len(labels) != len(images):
            raise IdxError(f"{lpath}: {len(labels):,} labels for the {len(images):,} images of {ipath}")
        if labels.size and int(labels.max()) >= len(ds.classes):
            raise IdxError(f"{lpath}: label {int(labels.max())} out of range 0..{len(ds.classes) - 1}")
    return Dataset(ds, arrays["train_images"][:, None], arrays["train_labels"].astype(np.int64),
                   arrays["test_images"][:, None], arrays["test_labels"].astype(np.int64), source)


def fetch(name: str, cache: str | os.PathLike | None = None, *, progress: bool = True) -> dict[str, Path]:
    """Download the four files of dataset ``name`` into the cache (skipping those already there)."""
    ds = spec(name)
    folder = Path(cache) if cache is not None else cache_dir(ds.name)
    files = {}
    for part in PARTS:
        dest = folder / f"{STEMS[part]}.gz"
        if not dest.is_file():
            download([f"{m}{STEMS[part]}.gz" for m in ds.mirrors], dest, ds.sha256[part], progress=progress)
        files[part] = dest
    return files


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
                 cache: str | os.PathLike | None = None, progress: bool = True) -> Dataset:
    """Load MNIST or Fashion-MNIST from ``data_dir``, ``$BACKPROP_DATA``, the cache or (with
    ``download``) the dataset's mirrors; raises :class:`DatasetNotFoundError` saying where to put them."""
    ds = spec(name)
    files = find_files(ds.name, data_dir, cache)
    if files is None:
        if not download:
            raise DatasetNotFoundError(f"{ds.title} not found: " + _where_to_put(ds) +
                                       "; or let backprop download them (download=True, --download)")
        try:
            files = fetch(ds.name, cache, progress=progress)
        except DownloadError as exc:
            raise DatasetNotFoundError(f"{ds.title} not found and the download failed ({exc}).\n"
                                       "Offline? " + _where_to_put(ds)) from None
    return read_files(files, ds)


def load_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True,
               cache: str | os.PathLike | None = None, progress: bool = True) -> Dataset:
    """Full MNIST (60,000 + 10,000 images); see :func:`load_dataset`."""
    return load_dataset("mnist", data_dir, download=download, cache=cache, progress=progress)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True,
                       cache: str | os.PathLike | None = None, progress: bool = True) -> Dataset:
    """Full Fashion-MNIST (60,000 + 10,000 images); see :func:`load_dataset`."""
    return load_dataset("fashion-mnist", data_dir, download=download, cache=cache, progress=progress)


def load_mnist_subset() -> Dataset:
    """The MNIST subset shipped in the package: 6,000 training and 1,000 test images, balanced."""
    path = resources.files("backprop.data") / SUBSET_FILE
    with resources.as_file(path) as p, np.load(p, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        if meta.get("format") != SUBSET_FORMAT:
            raise IdxError(f"{p}: format {meta.get('format')!r}, expected {SUBSET_FORMAT!r}")
        return Dataset(MNIST, npz["x_train"][:, None], npz["y_train"].astype(np.int64),
                       npz["x_test"][:, None], npz["y_test"].astype(np.int64), "embedded subset")
