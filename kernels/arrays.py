"""The type of the arrays every layer of backprop passes around.

``Array`` is a backend array: a ``numpy.ndarray`` on the NumPy and Numba backends, a ``cupy.ndarray``
on the CuPy backend, or any other array a backend's ``xp`` module makes. It is ``Any`` to the type
checker, since the backends share no array base class (and CuPy need not be installed); it documents
what a signature expects. It lives here, in the lowest layer, because kernels <- backends <- backprop
all use it.
"""

from __future__ import annotations

from typing import Any, TypeAlias

Array: TypeAlias = Any

# A step scalar of an optimizer update: a Python float, or a 0-d array of the parameter's dtype on its
# backend (what optimizers pass: values that change every step, such as the learning rate, stay in
# device memory, where a captured CUDA graph reads the current ones).
Scalar: TypeAlias = Any

__all__ = ["Array", "Scalar"]
