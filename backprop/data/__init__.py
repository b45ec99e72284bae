"""Data: mini-batch loading (and, later, datasets)."""

from backprop.data.loader import DataLoader

__all__ = ["DataLoader"]
