"""Layers in the explicit forward/backward style."""

from backprop.layers.activations import ReLU, Sigmoid, Softmax, Tanh
from backprop.layers.base import Layer
from backprop.layers.conv import Conv2D
from backprop.layers.dropout import Dropout
from backprop.layers.linear import Linear
from backprop.layers.norm import BatchNorm1D, BatchNorm2D
from backprop.layers.pool import MaxPool2D, ReLUMaxPool2D
from backprop.layers.reshape import Flatten

__all__ = ["BatchNorm1D", "BatchNorm2D", "Conv2D", "Dropout", "Flatten", "Layer", "Linear",
           "MaxPool2D", "ReLU", "ReLUMaxPool2D", "Sigmoid", "Softmax", "Tanh"]
