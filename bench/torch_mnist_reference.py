"""The SimpleConvNet of the zoo in PyTorch on full MNIST (Adam 1e-3, batch 100, pixels scaled to [0, 1],
PyTorch's default init): test accuracy and training images/s of each of 5 epochs, as a reference for
backprop's figures (``backprop train`` prints the same two per epoch).

    BACKPROP_DATA=../shared/data/mnist python bench/torch_mnist_reference.py SEED [SEED ...]
"""
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

from backprop.data import load_mnist

torch.set_num_threads(2)
d = load_mnist(os.environ.get("BACKPROP_DATA", "../shared/data/mnist"))
xtr = torch.tensor(d.x_train.reshape(-1, 1, 28, 28) / 255.0, dtype=torch.float32)
ytr = torch.tensor(d.y_train.astype(np.int64))
xte = torch.tensor(d.x_test.reshape(-1, 1, 28, 28) / 255.0, dtype=torch.float32)
yte = torch.tensor(d.y_test.astype(np.int64))
for seed in map(int, sys.argv[1:]):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4320, 100), nn.ReLU(), nn.Linear(100, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    lossf = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    accs, rates = [], []
    for _epoch in range(5):
        perm = torch.randperm(60000, generator=g)
        start = time.perf_counter()
        for i in range(0, 60000, 100):
            idx = perm[i:i + 100]
            opt.zero_grad()
            lossf(net(xtr[idx]), ytr[idx]).backward()
            opt.step()
        rates.append(60000 / (time.perf_counter() - start))
        with torch.no_grad():
            accs.append((net(xte).argmax(1) == yte).float().mean().item())
    print(f"torch {torch.__version__} default init, seed {seed}: test accuracy "
          + " ".join(f"{a:.4f}" for a in accs) + "; training img/s " + " ".join(f"{r:,.0f}" for r in rates), flush=True)
