"""Kernel implementations, one module per backend; ``reference`` is the array-module-generic original."""
