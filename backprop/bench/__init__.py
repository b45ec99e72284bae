"""Benchmarks of the library's own code paths, behind ``backprop bench`` and ``backprop profile``.

Every end-to-end figure trains with :func:`backprop.training.train_step`, the one step ``fit`` runs.

- ``stats``: spread of timings (median, quartiles, min/max), the machine, a measured matmul peak;
- ``kernels``: every backend kernel at the SimpleConvNet and a CIFAR-like shape, backends taking turns;
- ``e2e``: zoo models trained end to end, one subprocess per implementation and round;
- ``torch_models``: the zoo's networks in PyTorch with the same weights (PyTorch is optional);
- ``profile``: time per layer and per kernel inside training steps;
- ``report``: the terminal/Markdown tables, the JSON and the PNG, and two runs side by side;
- ``suite``: what ``backprop bench`` runs, and where it writes.
"""
