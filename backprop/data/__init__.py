"""Data: mini-batch loading, the IDX format, and the MNIST and Fashion-MNIST datasets."""

from backprop.data.download import ChecksumError, DownloadError
from backprop.data.idx import IdxError, read_idx, write_idx
from backprop.data.loader import DataLoader
from backprop.data.mnist import (
    Dataset,
    DatasetNotFoundError,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    load_mnist_subset,
)

__all__ = ["ChecksumError", "DataLoader", "Dataset", "DatasetNotFoundError", "DownloadError", "IdxError",
           "load_dataset", "load_fashion_mnist", "load_mnist", "load_mnist_subset", "read_idx", "write_idx"]
