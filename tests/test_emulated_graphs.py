"""CUDA graphs on the emulated device (tests/cuda_harness/device.py): a capture records device work
without running it and refuses what CUDA and CuPy refuse; a replay re-runs the recorded work on the
static buffers' new contents; and the device counts the launches CuPy would make."""

from __future__ import annotations

import numpy as np
import pytest

from backprop import targets_checked, training, zoo
from backprop.graphs import CudaGraphStep
from backprop.losses import SoftmaxCrossEntropy
from backprop.optim import Adam
from cuda_harness import device
from cuda_harness.emulated import count_launches


@pytest.fixture
def xp(emulated_cupy):
    return emulated_cupy.xp


@pytest.fixture
def pool(xp):
    return xp.cuda.MemoryPool()


def capturing(xp, pool, body):
    """``body()`` captured on a stream of its own with allocations from ``pool``: (its result, the graph)."""
    stream = xp.cuda.Stream(non_blocking=True)
    with stream, xp.cuda.using_allocator(pool.malloc):
        stream.begin_capture()
        try:
            result = body()
        finally:
            graph = stream.end_capture()
    return result, graph


# -- what a capture refuses --------------------------------------------------------------------------------
REFUSED = {
    "float": (lambda xp, a: float(a.sum()), "synchronous API calls are disallowed: host read \\(__float__\\)"),
    "int": (lambda xp, a: int(a[0, 0]), "host read \\(__int__\\)"),
    "bool": (lambda xp, a: bool(a[0, 0]), "host read \\(__bool__\\)"),
    "index": (lambda xp, a: [1, 2][a[0, 0].astype(np.int64)], "host read \\(__index__\\)"),
    "item": (lambda xp, a: a.sum().item(), "host read \\(item\\)"),
    "tolist": (lambda xp, a: a.tolist(), "host read \\(tolist\\)"),
    "asnumpy": (lambda xp, a: xp.asnumpy(a), "host read \\(get\\)"),
    "mask": (lambda xp, a: a[a > 0], "host read \\(boolean mask indexing\\)"),
    "nonzero": (lambda xp, a: a.nonzero(), "host read \\(nonzero\\)"),
    "xp.nonzero": (lambda xp, a: xp.nonzero(a), "host read \\(nonzero\\)"),
    "asarray": (lambda xp, a: xp.asarray(np.ones(3)), "H2D transfers are disallowed: xp.asarray of host data"),
    "setitem": (lambda xp, a: a.__setitem__(0, np.ones(3)), "H2D transfers are disallowed: __setitem__"),
    "set": (lambda xp, a: a.set(np.ones((2, 3))), "H2D transfers are disallowed: ndarray.set"),
    "stream sync": (lambda xp, a: xp.cuda.get_current_stream().synchronize(), "cudaErrorStreamCaptureUnsupported"),
    "device sync": (lambda xp, a: xp.cuda.Device().synchronize(), "cudaErrorStreamCaptureUnsupported"),
}


@pytest.mark.parametrize("operation", REFUSED)
def test_a_capture_refuses_host_reads_pageable_copies_and_synchronization(xp, pool, operation):
    refused, message = REFUSED[operation]
    a = xp.asarray(np.arange(6.0).reshape(2, 3))
    stream = xp.cuda.Stream(non_blocking=True)
    with stream, xp.cuda.using_allocator(pool.malloc):
        stream.begin_capture()
        with pytest.raises(RuntimeError, match=message):
            refused(xp, a)
        assert stream.is_capturing()
        try:
            stream.end_capture()
        except device.CUDARuntimeError as exc:  # a CUDA error invalidates the capture; CuPy's checks do not
            assert "cudaErrorStreamCaptureInvalidated" in str(exc) and "sync" in operation
        else:
            assert "sync" not in operation
    assert not stream.is_capturing()


def test_a_capture_refuses_memory_from_outside_a_private_pool(xp):
    a = xp.asarray(np.ones(3))
    stream = xp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(device.CUDARuntimeError, match="allocating 24 bytes outside the capture's private pool"):
            a + 1
        with xp.cuda.using_allocator(xp.get_default_memory_pool().malloc), \
                pytest.raises(device.CUDARuntimeError, match="outside the capture's private pool"):
            a * 2
        a += 1  # in place: no allocation, recorded
        with pytest.raises(device.CUDARuntimeError, match="cudaErrorStreamCaptureInvalidated"):
            stream.end_capture()


def test_capture_needs_a_stream_of_its_own_and_blocking_streams_see_the_legacy_stream(xp, pool):
    with pytest.raises(RuntimeError, match="cannot capture on the default \\(legacy\\) stream"):
        xp.cuda.Stream.null.begin_capture()
    a = xp.asarray(np.ones(3))
    blocking = xp.cuda.Stream()
    blocking.begin_capture()
    with pytest.raises(device.CUDARuntimeError, match="cudaErrorStreamCaptureImplicit"):
        a += 1  # on the legacy stream, which waits for every blocking stream
    with pytest.raises(device.CUDARuntimeError, match="cudaErrorStreamCaptureInvalidated"):
        blocking.end_capture()
    _, graph = capturing(xp, pool, lambda: a.__iadd__(1))  # a non-blocking stream: the legacy stream may run
    a *= 3
    np.testing.assert_array_equal(xp.asnumpy(a), 3)  # the capture ran nothing
    assert graph.size == 1 and not xp.cuda.Stream.null.is_capturing()


def test_the_current_stream_is_the_innermost_with_block(xp):
    s1, s2 = xp.cuda.Stream(non_blocking=True), xp.cuda.Stream(non_blocking=True)
    assert xp.cuda.get_current_stream() == xp.cuda.Stream.null
    with s1:
        with s2:
            assert xp.cuda.get_current_stream() is s2
        assert xp.cuda.get_current_stream() is s1
    with pytest.raises(NotImplementedError, match="created via stream capture"):
        xp.cuda.Graph()


# -- what a capture records, and its replay ----------------------------------------------------------------
def test_results_are_poisoned_after_capture_and_in_place_work_waits_for_the_replay(xp, pool, emulated_cupy):
    x = xp.asarray(np.arange(-3, 3, dtype=np.float32).reshape(2, 3))
    acc = xp.zeros((2, 3), dtype=np.float32)

    def body():
        acc[...] = x * 2  # in place: recorded only
        return x + 1, x.argmax(axis=1), emulated_cupy.relu(x), x.sum()
    (y, arg, r, s), graph = capturing(xp, pool, body)
    assert np.isnan(xp.asnumpy(y)).all() and (xp.asnumpy(arg) == -1).all()
    assert np.isnan(xp.asnumpy(r)).all() and np.isnan(float(s))
    assert (xp.asnumpy(acc) == 0).all()
    graph.launch()
    host = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(xp.asnumpy(y), host + 1)
    np.testing.assert_array_equal(xp.asnumpy(arg), host.argmax(axis=1))
    np.testing.assert_array_equal(xp.asnumpy(r), np.maximum(host, 0))
    np.testing.assert_array_equal(xp.asnumpy(acc), host * 2)
    assert float(s) == host.sum()


def step(backend, x, w, labels, lr):
    """A small training step: a matmul, one of our kernels, ufuncs, a reduction, an in-place update."""
    xp = backend.xp
    h = backend.relu(x @ w)
    loss, grad = backend.softmax_cross_entropy(h, labels)
    w -= lr * (x.T @ (grad * (h > 0)))
    return loss, xp.exp(h).max(axis=1)


def test_a_replay_on_new_data_equals_eager_on_that_data(xp, pool, emulated_cupy, rng):
    b = emulated_cupy
    w0 = rng.standard_normal((6, 4)).astype(np.float32)
    x, labels = b.asarray(rng.standard_normal((5, 6))), xp.asarray(np.array([0, 1, 2, 3, 0]))
    w = b.asarray(w0)
    lr = xp.asarray(np.float32(0.1))  # a device scalar: a schedule may change it between replays
    (loss, peak), graph = capturing(xp, pool, lambda: step(b, x, w, labels, lr))
    np.testing.assert_array_equal(xp.asnumpy(w), w0)  # nothing ran
    w_eager = b.asarray(w0)
    for i, rate in enumerate((0.1, 0.05, 0.2)):
        batch, targets = rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 4, 5)
        x[...], labels[...], lr[...] = b.asarray(batch), xp.asarray(targets), np.float32(rate)
        graph.launch()
        want_loss, want_peak = step(b, b.asarray(batch), w_eager, xp.asarray(targets), xp.asarray(np.float32(rate)))
        np.testing.assert_array_equal(xp.asnumpy(w), xp.asnumpy(w_eager), err_msg=f"replay {i}")
        assert float(loss) == float(want_loss)
        np.testing.assert_array_equal(xp.asnumpy(peak), xp.asnumpy(want_peak))


def test_random_draws_in_a_capture_are_replayed_as_drawn(xp, pool):
    rs = xp.random.RandomState(0)
    drawn, graph = capturing(xp, pool, lambda: rs.random_sample((3,), dtype=np.float32))
    graph.launch()
    first = xp.asnumpy(drawn)
    graph.launch()
    np.testing.assert_array_equal(xp.asnumpy(drawn), first)  # cuRAND's offset is baked into the graph
    np.testing.assert_array_equal(first, np.random.RandomState(0).random_sample(3).astype(np.float32))


# -- counting ----------------------------------------------------------------------------------------------
def test_launch_counts_of_a_known_sequence_are_exact(xp, emulated_cupy):
    def run():
        a = xp.zeros((4, 3), dtype=np.float32)  # memset
        xp.empty((4, 3))  # an allocation only
        b = a + 1  # add
        b.reshape(12), b.T, b[1:, ::2], b[0]  # views
        b.T @ b  # cuBLAS on a transposed (F-contiguous) view: no copy
        b[:, ::2] @ xp.ones((2, 2), np.float32)  # ones; a copy of the strided operand, then cuBLAS
        xp.ones((2, 3), np.float32) @ xp.ones((5, 3, 4), np.float32)  # ones, ones; broadcast: 3 pointer arrays
        b.astype(np.float64).sum(axis=0)  # astype, sum
        b -= 1  # subtract, in place
        xp.ascontiguousarray(b), xp.ascontiguousarray(b.T)  # the same array; a copy
        b[xp.asarray(np.array([0, 2]))]  # a host-to-device copy; a gather
        emulated_cupy.relu(b)  # our kernel
        return float(b.max())  # a reduction; a host read
    _, usage = count_launches(emulated_cupy, run)
    assert usage.by_operation == {"zeros": 1, "add": 1, "matmul": 3, "matmul: operand copy": 1,
                                  "matmul: pointer arrays": 3, "ones": 3, "astype": 2, "sum": 1, "subtract": 1,
                                  "getitem": 1, "relu<float>": 1, "max": 1}
    assert usage.launches == 19 and usage.host_to_device == 1 and usage.device_to_host == 0
    assert usage.host_reads == 1 and usage.reads_by_operation == {"__float__": 1}


def test_a_replay_is_one_launch_and_the_graph_knows_its_size(xp, pool, emulated_cupy):
    a = xp.asarray(np.ones((2, 2), np.float32))
    _, graph = capturing(xp, pool, lambda: emulated_cupy.relu(a * 2 + 1))
    assert graph.size == 3 and graph.by_operation() == {"multiply": 1, "add": 1, "relu<float>": 1}
    _, usage = count_launches(emulated_cupy, graph.launch)
    assert usage.launches == 1 and usage.by_operation == {"graph": 1}


def test_allocations_under_using_allocator_come_from_that_pool(xp, pool):
    with xp.cuda.using_allocator(pool.malloc):
        a = xp.empty((10,), np.float32)  # 40 bytes: one 512-byte block
        b = a[2:]  # a view: no allocation
        assert pool.used_bytes() == 512 and pool.total_bytes() == 512
    c = xp.empty((1000,), np.float32)  # the default pool's
    assert pool.used_bytes() == 512
    del a
    assert pool.used_bytes() == 512  # the view holds the memory
    del b
    assert pool.used_bytes() == 0 and pool.total_bytes() == 512  # cached for reuse
    pool.free_all_blocks()
    assert pool.total_bytes() == 0 and c.size == 1000


# -- device arrays are not host arrays -----------------------------------------------------------------------
def test_host_arrays_are_not_device_arrays(xp, emulated_cupy, harness_lib):
    host = np.ones(3, np.float32)
    assert not isinstance(host, xp.ndarray) and not emulated_cupy.is_array(host)
    dev = xp.asarray(host)
    assert emulated_cupy.is_array(dev) and emulated_cupy.is_array(dev + dev) and emulated_cupy.is_array(dev.sum())
    assert type(xp.asnumpy(dev)) is np.ndarray
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        dev + host
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        xp.exp(host)


def test_a_simple_conv_net_training_step_makes_at_most_30_launches(emulated_cupy, rng, capsys):
    """SimpleConvNet, batch 100, Adam: at most 30 launches eagerly (the fused bias-ReLU and ReLU-pooling
    kernels and whole-batch convolution products got it there), none of them a host read or copy; as a
    CUDA graph, exactly the eager step's device work, replayed with one launch plus the step scalars and
    the batch's copies."""
    b = emulated_cupy
    model = zoo.simple_conv_net(backend=b)
    loss, optimizer = SoftmaxCrossEntropy().to(b), Adam(model.parameters())
    x = b.asarray(rng.standard_normal((100, 1, 28, 28)).astype(np.float32))
    y = b.xp.asarray(rng.integers(0, 10, 100))
    with targets_checked(loss):  # as fit() runs its steps: the dataset's labels were checked once
        training.train_step(model, loss, optimizer, x, y)  # warm-up: the optimizer's state exists now
        _, eager = count_launches(b, lambda: training.train_step(model, loss, optimizer, x, y))
        _, device_half = count_launches(b, lambda: training.device_step(model, loss, optimizer, x, y))
        step = CudaGraphStep(training.device_step, model, loss, optimizer, batch_size=100, warmup=0)
        with step.running():
            step(x, y)  # the capture, then its first replay
            _, replayed = count_launches(b, lambda: step(x, y))
    with capsys.disabled():
        print(f"\nSimpleConvNet training step (batch 100, Adam), eager: {eager}\n"
              f"as a CUDA graph of {step.graph.size} launches, each step: {replayed}")
    assert eager.host_reads == eager.host_to_device == eager.device_to_host == 0
    assert eager.launches <= 30, eager
    assert step.graph.by_operation() == device_half.by_operation
    assert replayed.by_operation["graph"] == 1 and replayed.host_reads == 0


def test_fit_counts_accuracy_from_the_losss_own_pass(emulated_cupy, rng):
    """fit's running loss and accuracy add 5 launches to a step (the loss: astype, multiply, add; the
    correct count: the sum of the softmax-cross-entropy kernel's hits, and an add): no argmax pass of
    their own, no copy back, no host read."""
    b = emulated_cupy
    model = zoo.simple_conv_net(backend=b)
    loss, optimizer = SoftmaxCrossEntropy().to(b), Adam(model.parameters())
    x = b.asarray(rng.standard_normal((100, 1, 28, 28)).astype(np.float32))
    y = b.xp.asarray(rng.integers(0, 10, 100))
    sums = training.RunningSums(b, accuracy=True, loss=loss)
    with targets_checked(loss):
        value, out = training.train_step(model, loss, optimizer, x, y)
        _, step = count_launches(b, lambda: training.train_step(model, loss, optimizer, x, y))
        value, out = training.train_step(model, loss, optimizer, x, y)
        _, added = count_launches(b, lambda: sums.add(value, out, y))
    assert added.launches == 5 and "argmax" not in added.by_operation, added
    assert added.host_reads == added.host_to_device == added.device_to_host == 0
    hits = int((b.to_numpy(out).argmax(axis=1) == b.to_numpy(y)).sum())
    assert sums.read()[1] == hits
    assert step.launches <= 30
