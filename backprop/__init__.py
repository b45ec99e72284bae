"""backprop: deep learning from scratch, explicit forward/backward layers on swappable backends.

Layers, losses and optimizers are written once against a :class:`~backprop.backends.Backend`; the
NumPy backend is the reference, others (CuPy for CUDA GPUs, Numba) run the same models faster.
"""

from backprop import (
    callbacks,  # fit's callbacks: bp.callbacks.EarlyStopping(...), ...
    distributed,  # data-parallel training under mpiexec: fit(..., comm=bp.distributed.init())
    zoo,  # the model zoo: bp.zoo.simple_conv_net(), ...
)
from backprop.backends import (
    Backend,
    BackendUnavailableError,
    available_backends,
    get_backend,
    manual_seed,
    use_backend,
)
from backprop.checkpoint import CheckpointError
from backprop.data import DataLoader
from backprop.gradcheck import GradcheckResult, gradcheck
from backprop.layers import (
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dropout,
    Flatten,
    Layer,
    Linear,
    MaxPool2D,
    ReLU,
    ReLUMaxPool2D,
    Sigmoid,
    Softmax,
    Tanh,
)
from backprop.losses import MSE, BCEWithLogits, BinaryCrossEntropy, Loss, SoftmaxCrossEntropy, targets_checked
from backprop.model import Sequential
from backprop.optim import SGD, AdaGrad, Adam, AdamW, Momentum, Optimizer, RMSProp, clip_grad_norm
from backprop.parameter import Parameter
from backprop.schedules import CosineAnnealingLR, ExponentialLR, LRScheduler, StepLR
from backprop.training import TrainingDivergedError, train_step

__version__ = "0.1.0"

__all__ = [
    "MSE", "SGD", "AdaGrad", "Adam", "AdamW", "BCEWithLogits", "Backend", "BackendUnavailableError",
    "BatchNorm1D", "BatchNorm2D", "BinaryCrossEntropy", "CheckpointError", "Conv2D",
    "CosineAnnealingLR", "DataLoader", "Dropout", "ExponentialLR", "Flatten", "GradcheckResult",
    "LRScheduler", "Layer", "Linear", "Loss", "MaxPool2D", "Momentum", "Optimizer", "Parameter",
    "RMSProp", "ReLU", "ReLUMaxPool2D", "Sequential", "Sigmoid", "Softmax", "SoftmaxCrossEntropy",
    "StepLR", "Tanh", "TrainingDivergedError", "available_backends", "clip_grad_norm", "get_backend",
    "callbacks", "distributed", "gradcheck", "manual_seed", "targets_checked", "train_step", "use_backend", "zoo",
]
