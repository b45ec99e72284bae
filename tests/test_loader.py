"""DataLoader: batching, seeded shuffling, drop_last, normalization, one-hot labels, device-resident mode."""

from __future__ import annotations

import numpy as np
import pytest

from backprop.data import DataLoader


def images(n=10):
    return np.arange(n * 4, dtype=np.uint8).reshape(n, 1, 2, 2), np.arange(n) % 3


def host(backend, a):
    return backend.to_numpy(a) if backend is not None else np.asarray(a)


def test_classic_constructor_and_full_coverage(backend):
    x, y = np.random.default_rng(0).random((10, 3)), np.arange(10)
    loader = DataLoader(x, y, batch_size=4, shuffle=True, seed=1, backend=backend)
    assert len(loader) == 3
    batches = list(loader)
    assert [len(xb) for xb, _ in batches] == [4, 4, 2]
    assert batches[0][0].dtype == backend.dtype and backend.is_array(batches[0][0])
    seen = np.concatenate([host(backend, yb) for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(10))
    np.testing.assert_allclose(host(backend, batches[0][0]), x[seen[:4]].astype(backend.dtype))


def test_seeded_shuffling_repeats_and_each_epoch_differs():
    x = np.arange(20)
    a, b = DataLoader(x, batch_size=5, seed=3), DataLoader(x, batch_size=5, seed=3)
    first = [xb.tolist() for xb, _ in a]
    assert first == [xb.tolist() for xb, _ in b]
    assert first != [xb.tolist() for xb, _ in a]  # the next epoch has another order
    assert [xb.tolist() for xb, _ in DataLoader(x, batch_size=5, shuffle=False)][0] == [0, 1, 2, 3, 4]


def test_drop_last():
    x = np.arange(10)
    assert len(DataLoader(x, batch_size=4, drop_last=True)) == 2
    assert [len(b) for b, _ in DataLoader(x, batch_size=4, drop_last=True, seed=0)] == [4, 4]
    assert len(DataLoader(x, batch_size=5, drop_last=True)) == 2
    assert len(DataLoader(x, batch_size=None)) == 1


def test_scale_and_normalize(backend):
    x, y = images()
    loader = DataLoader(x, y, batch_size=10, shuffle=False, backend=backend, scale=1 / 255, normalize=(0.5, 0.25))
    xb, yb = next(iter(loader))
    assert xb.dtype == backend.dtype
    np.testing.assert_allclose(host(backend, xb), (x / 255 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)
    assert host(backend, yb).dtype.kind == "i"
    only_scale = next(iter(DataLoader(x, batch_size=3, shuffle=False, backend=backend, scale=0.5)))[0]
    np.testing.assert_allclose(host(backend, only_scale), x[:3] * 0.5)


def test_normalization_never_changes_the_callers_array():
    x = np.ones((4, 2), np.float32)
    xb = next(iter(DataLoader(x, batch_size=4, shuffle=False, normalize=(1.0, 2.0))))[0]
    assert xb.dtype == np.float32 and (xb == 0).all() and (x == 1).all()


def test_one_hot(backend):
    x, y = images(6)
    _, yb = next(iter(DataLoader(x, y, batch_size=6, shuffle=False, backend=backend, one_hot=3)))
    assert yb.shape == (6, 3) and yb.dtype == backend.dtype
    np.testing.assert_array_equal(host(backend, yb), np.eye(3)[y])


@pytest.mark.parametrize("kwargs, message", [
    ({"one_hot": 2}, "labels must lie in \\[0, 1\\]"),
    ({"one_hot": 0}, "positive int"),
    ({"normalize": (0.0, 0.0)}, "std must be positive and finite"),
    ({"normalize": (0.0, float("inf"))}, "std must be positive and finite"),
    ({"normalize": (float("nan"), 1.0)}, "mean must be finite"),
    ({"scale": float("nan")}, "scale must be finite"),
    ({"resident": True}, "needs a backend"),
    ({"batch_size": 0}, "positive int"),
])
def test_bad_arguments(kwargs, message):
    x, y = images()
    with pytest.raises(ValueError, match=message):
        DataLoader(x, y, **kwargs)


def test_one_hot_needs_integer_labels():
    with pytest.raises(ValueError, match="integer labels"):
        DataLoader(np.zeros((3, 2)), np.zeros(3), one_hot=2)


def test_resident_gives_the_same_batches(backend):
    x, y = images(23)
    kwargs = {"batch_size": 5, "seed": 7, "backend": backend, "scale": 1 / 255, "one_hot": 3}
    resident = DataLoader(x, y, resident=True, **kwargs)
    streamed = DataLoader(x, y, **kwargs)
    assert backend.is_array(resident.x) and resident.x.dtype == np.uint8  # moved once, as bytes
    for _ in range(2):
        for (xa, ya), (xb, yb) in zip(resident, streamed, strict=True):
            np.testing.assert_array_equal(host(backend, xa), host(backend, xb))
            np.testing.assert_array_equal(host(backend, ya), host(backend, yb))


def test_state_dict_and_resuming_mid_epoch():
    x = np.arange(30)
    loader = DataLoader(x, batch_size=4, seed=5)
    list(loader)
    state = loader.state_dict()
    order = loader.order()
    expected = [b.tolist() for b, _ in loader.batches(order)]
    assert [b.tolist() for b, _ in loader.batches(order, start=3)] == expected[3:]
    again = DataLoader(x, batch_size=4, seed=999)
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.order(), order)


def test_scale_zero_is_zero_not_one():
    x = np.arange(4, dtype=np.uint8).reshape(4, 1)
    xb, _ = next(iter(DataLoader(x, None, batch_size=4, shuffle=False, scale=0.0)))
    np.testing.assert_array_equal(xb, np.zeros((4, 1)))


def test_one_hot_takes_numpy_ints_and_plain_lists():
    xb, yb = next(iter(DataLoader([[0.0], [1.0]], [0, 2], batch_size=2, shuffle=False, one_hot=np.int64(3))))
    np.testing.assert_array_equal(yb, [[1, 0, 0], [0, 0, 1]])


def test_a_batch_larger_than_the_data_gives_one_short_batch_or_none_with_drop_last():
    x = np.zeros((5, 1), np.float32)
    assert [len(xb) for xb, _ in DataLoader(x, None, batch_size=8, shuffle=False)] == [5]
    loader = DataLoader(x, None, batch_size=8, shuffle=False, drop_last=True)
    assert len(loader) == 0 and list(loader) == []


def test_normalize_of_strings_is_a_type_error():
    with pytest.raises(TypeError, match="must be a real number"):
        DataLoader(np.zeros((2, 1)), None, normalize=("0.5", "0.5"))
