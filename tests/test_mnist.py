"""MNIST loading: where files are looked for, checks on their contents, verified downloads, the
embedded subset, and (when the full files are there) the real dataset."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from backprop.data import mnist
from backprop.data.download import ChecksumError, DownloadError, download, verify
from backprop.data.idx import IdxError, encode_idx, write_idx
from backprop.data.make_subset import balanced_indices, make_subset
from backprop.data.mnist import (
    STEMS,
    DatasetNotFoundError,
    find_files,
    load_dataset,
    load_mnist,
    load_mnist_subset,
)
from bounded import gzip_bomb, peak_rss

# The full MNIST files: in $BACKPROP_DATA, else in shared/data/mnist beside the repository (CI's layout); in
# the folder itself or its mnist/ subfolder, where the library looks.
FULL_DIR = Path(os.environ.get("BACKPROP_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")


def _have_full() -> bool:
    try:
        return find_files("mnist", FULL_DIR) is not None
    except DatasetNotFoundError:
        return False


needs_full = pytest.mark.skipif(not _have_full(), reason=f"full MNIST files not found in {FULL_DIR}: set BACKPROP_DATA "
                                                         "to the folder that holds them (README: Install and run)")


def fake_arrays(n_train=30, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    return {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
            "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "test_labels": (np.arange(n_test) % 10).astype(np.uint8)}


def write_fake(folder: Path, gz=True, **kwargs) -> dict[str, np.ndarray]:
    arrays = fake_arrays(**kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    for part, a in arrays.items():
        write_idx(folder / (STEMS[part] + (".gz" if gz else "")), a)
    return arrays


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the user's $BACKPROP_DATA or cache."""
    monkeypatch.delenv("BACKPROP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# -- finding and reading files ----------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_load_from_explicit_folder(tmp_path, gz):
    arrays = write_fake(tmp_path / "d", gz=gz)
    data = load_mnist(tmp_path / "d", download=False)
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_train.dtype == np.uint8
    assert data.y_train.dtype == np.int64 and data.x_test.shape == (20, 1, 28, 28)
    np.testing.assert_array_equal(data.x_train[:, 0], arrays["train_images"])
    np.testing.assert_array_equal(data.y_test, arrays["test_labels"])
    assert data.source == str(tmp_path / "d")


def test_dataset_subfolder_and_env_var(tmp_path, monkeypatch):
    write_fake(tmp_path / "root" / "mnist")
    assert load_mnist(tmp_path / "root", download=False).x_train.shape[0] == 30
    monkeypatch.setenv("BACKPROP_DATA", str(tmp_path / "root"))
    assert load_mnist(download=False).source == str(tmp_path / "root" / "mnist")


def test_cache_is_used(tmp_path):
    write_fake(tmp_path / "xdg-cache" / "backprop" / "mnist")
    assert mnist.cache_dir("mnist") == tmp_path / "xdg-cache" / "backprop" / "mnist"
    assert load_mnist(download=False).x_test.shape[0] == 20


def test_explicit_folder_without_files_says_where_to_put_them(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="BACKPROP_DATA") as info:
        load_mnist(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value) and "train-images-idx3-ubyte.gz" in str(info.value)


def test_nothing_anywhere_and_no_download(tmp_path):
    assert find_files("mnist") is None
    with pytest.raises(DatasetNotFoundError, match="put train-images"):
        load_mnist(download=False)


def test_offline_download_failure_is_a_clear_message(tmp_path, monkeypatch):
    offline = dataclasses.replace(mnist.MNIST, mirrors=(f"file://{tmp_path}/no-such-mirror/",))
    monkeypatch.setitem(mnist.DATASETS, "mnist", offline)
    with pytest.raises(DatasetNotFoundError, match="Offline\\?") as info:
        load_dataset("mnist", progress=False)
    assert "no-such-mirror" in str(info.value)
    assert not any((tmp_path / "xdg-cache").rglob("*-ubyte*"))


@pytest.mark.parametrize("part, change, message", [
    ("train_images", lambda a: a[:, :27], "shape \\(N, 28, 28\\)"),
    ("train_labels", lambda a: a[:-1], "29 labels for the 30 images"),
    ("test_labels", lambda a: a + 10, "out of range"),
    ("test_images", lambda a: a.astype(np.float32), "expected uint8 images"),
])
def test_contents_are_checked(tmp_path, part, change, message):
    arrays = write_fake(tmp_path)
    write_idx(tmp_path / f"{STEMS[part]}.gz", change(arrays[part]))
    with pytest.raises(IdxError, match=message):
        load_mnist(tmp_path, download=False)


def test_an_images_file_claiming_more_than_mnist_could_hold_is_refused_unread(tmp_path):
    """A million 28x28 images (784 MB, 3.4 MB gzipped): past MAX_IMAGES, so refused from the header."""
    write_fake(tmp_path)
    path = tmp_path / f"{STEMS['train_images']}.gz"
    gzip_bomb(path, struct.pack(">HBB3I", 0, 8, 3, 1_000_000, 28, 28), 1_000_000 * 28 * 28)
    error, mib = peak_rss(f"from backprop.data.mnist import load_mnist\nload_mnist({str(tmp_path)!r}, download=False)")
    assert error.startswith(f"IdxError: {path}: the header declares shape (1000000, 28, 28) of uint8, "
                            "784,000,000 bytes, more than the 470,400,000 allowed"), error
    assert mib < 300, f"peak RSS {mib} MiB"


def test_unknown_dataset():
    with pytest.raises(ValueError, match="choose one of mnist, fashion-mnist"):
        load_dataset("cifar10")


# -- downloads --------------------------------------------------------------------------------------
def serve(tmp_path: Path, payload: bytes, name="file.gz") -> str:
    mirror = tmp_path / "mirror"
    mirror.mkdir(exist_ok=True)
    (mirror / name).write_bytes(payload)
    return (mirror / name).as_uri()


def test_download_verifies_uncompressed_sum_and_renames_into_place(tmp_path):
    raw = encode_idx(np.arange(50, dtype=np.uint8))
    url = serve(tmp_path, gzip.compress(raw))
    dest = tmp_path / "cache" / "labels.gz"
    assert download([url], dest, [hashlib.sha256(raw).hexdigest()], progress=False) == dest
    assert gzip.decompress(dest.read_bytes()) == raw
    assert [p.name for p in dest.parent.iterdir()] == ["labels.gz"]


def test_download_accepts_the_compressed_sum_too(tmp_path):
    packed = gzip.compress(b"abc" * 100)
    dest = tmp_path / "cache" / "x.gz"
    download([serve(tmp_path, packed)], dest, [hashlib.sha256(packed).hexdigest()], progress=False)
    assert verify(dest, [hashlib.sha256(packed).hexdigest()]) == hashlib.sha256(packed).hexdigest()


def test_checksum_mismatch_leaves_no_file_behind(tmp_path):
    url = serve(tmp_path, gzip.compress(b"tampered" * 100))
    dest = tmp_path / "cache" / "x.gz"
    with pytest.raises(DownloadError, match="ChecksumError") as info:
        download([url], dest, ["0" * 64], progress=False)
    assert url in str(info.value)
    assert list(dest.parent.iterdir()) == []


def test_next_mirror_is_tried(tmp_path):
    raw = b"payload" * 10
    good = serve(tmp_path, gzip.compress(raw), "good.gz")
    bad = serve(tmp_path, gzip.compress(b"corrupt"), "bad.gz")
    dest = tmp_path / "cache" / "x.gz"
    missing = f"file://{tmp_path}/missing.gz"
    download([missing, bad, good], dest, [hashlib.sha256(raw).hexdigest()], progress=False)
    assert gzip.decompress(dest.read_bytes()) == raw


def test_interrupted_stream_leaves_no_file(tmp_path):
    class Broken:
        headers = {"Content-Length": "1000"}

        def __init__(self):
            self.calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls > 2:
                raise TimeoutError("connection reset")
            return b"x" * 100

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    dest = tmp_path / "cache" / "x.gz"
    with pytest.raises(DownloadError, match="connection reset"):
        download(["https://example.invalid/x.gz"], dest, ["0" * 64], progress=False,
                 opener=lambda url, timeout: Broken())
    assert list(dest.parent.iterdir()) == []


def test_a_malformed_http_answer_moves_on_to_the_next_mirror(tmp_path):
    import http.client
    import urllib.request
    raw = b"payload" * 10
    good = serve(tmp_path, gzip.compress(raw), "good.gz")

    def opener(url, timeout):
        if url.startswith("http://"):
            raise http.client.BadStatusLine("garbage")
        return urllib.request.urlopen(url, timeout=timeout)

    dest = tmp_path / "cache" / "x.gz"
    download(["http://bad.invalid/x.gz", good], dest, [hashlib.sha256(raw).hexdigest()], progress=False,
             opener=opener)
    assert gzip.decompress(dest.read_bytes()) == raw
    with pytest.raises(DownloadError, match="BadStatusLine"):
        download(["http://bad.invalid/x.gz"], tmp_path / "cache" / "y.gz", ["0" * 64], progress=False,
                 opener=opener)


def test_verify_rejects_damaged_gzip_and_wrong_sums(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    packed = gzip.compress(data)
    path = tmp_path / "x.gz"
    path.write_bytes(packed[:-20])
    with pytest.raises(ChecksumError, match="matches none"):
        verify(path, [hashlib.sha256(data).hexdigest()])
    path.write_bytes(packed)
    assert verify(path, [hashlib.sha256(data).hexdigest()])
    with pytest.raises(ChecksumError):
        verify(path, ["0" * 64])


def test_fetch_downloads_all_four_files_into_the_cache(tmp_path, monkeypatch):
    arrays = fake_arrays()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    sums = {}
    for part, a in arrays.items():
        write_idx(mirror / f"{STEMS[part]}.gz", a)
        sums[part] = (hashlib.sha256(encode_idx(a)).hexdigest(),)
    fake = dataclasses.replace(mnist.MNIST, mirrors=(f"file://{tmp_path}/down/", mirror.as_uri() + "/"), sha256=sums)
    monkeypatch.setitem(mnist.DATASETS, "mnist", fake)
    data = load_dataset("mnist", progress=False)
    cache = tmp_path / "xdg-cache" / "backprop" / "mnist"
    assert data.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{s}.gz" for s in STEMS.values())
    np.testing.assert_array_equal(data.y_train, arrays["train_labels"])


def test_known_sums_are_well_formed():
    for spec in mnist.DATASETS.values():
        assert set(spec.sha256) == set(mnist.PARTS)
        for sums in spec.sha256.values():
            assert all(len(s) == 64 and int(s, 16) >= 0 for s in sums)


# -- the embedded subset ----------------------------------------------------------------------------
def test_embedded_subset():
    data = load_mnist_subset()
    assert data.x_train.shape == (6000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert np.bincount(data.y_train).tolist() == [600] * 10
    assert np.bincount(data.y_test).tolist() == [100] * 10
    assert data.source == "embedded subset" and data.x_train.max() == 255
    path = Path(mnist.__file__).with_name(mnist.SUBSET_FILE)
    assert path.stat().st_size < 2_000_000
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
    assert meta["license"] == "CC BY-SA 3.0" and "LeCun" in meta["attribution"]
    assert "CC BY-SA 3.0" in Path(mnist.__file__).with_name("MNIST_LICENSE.txt").read_text()


def test_balanced_indices_spread_over_the_file():
    labels = np.repeat(np.arange(3), 10)
    idx = balanced_indices(labels, 3)
    assert idx.tolist() == [0, 4, 9, 10, 14, 19, 20, 24, 29]
    with pytest.raises(ValueError, match="fewer than 11"):
        balanced_indices(labels, 11)


@pytest.mark.parametrize("argv, message", [
    (["nowhere"], "MNIST files not found in nowhere"),
    (["src", "--train-per-class", "-1"], "expected a positive integer"),
    (["src", "--test-per-class", "0"], "expected a positive integer"),
])
def test_make_subset_command_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    from backprop.data.make_subset import main as make_subset_main
    monkeypatch.chdir(tmp_path)
    write_fake(tmp_path / "src")
    with pytest.raises(SystemExit) as info:
        make_subset_main(argv)
    assert info.value.code in (1, 2)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_make_subset_from_files(tmp_path):
    write_fake(tmp_path / "src", n_train=40, n_test=20)
    out = make_subset(tmp_path / "src", tmp_path / "sub.npz", train_per_class=3, test_per_class=2)
    with np.load(out, allow_pickle=False) as npz:
        assert npz["x_train"].shape == (30, 28, 28) and np.bincount(npz["y_test"]).tolist() == [2] * 10


# -- the real files, when present -------------------------------------------------------------------
@needs_full
def test_full_mnist():
    data = load_mnist(FULL_DIR, download=False)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(data.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(data.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_full
def test_full_mnist_matches_the_known_uncompressed_sums():
    files = find_files("mnist", FULL_DIR)
    for part, path in files.items():
        assert verify(path, mnist.MNIST.sha256[part])


@needs_full
def test_shipped_subset_is_reproducible(tmp_path):
    out = make_subset(FULL_DIR, tmp_path / "subset.npz")
    shipped = Path(mnist.__file__).with_name(mnist.SUBSET_FILE)
    with np.load(out, allow_pickle=False) as made, np.load(shipped, allow_pickle=False) as ours:
        for name in ("x_train", "y_train", "x_test", "y_test", "meta"):
            np.testing.assert_array_equal(made[name], ours[name])


def test_mnist_files_are_not_taken_for_fashion_mnist(tmp_path, monkeypatch):
    arrays = write_fake(tmp_path)
    labels_sum = hashlib.sha256(encode_idx(arrays["train_labels"])).hexdigest()
    known = dataclasses.replace(mnist.MNIST, sha256={**mnist.MNIST.sha256, "train_labels": (labels_sum,)})
    monkeypatch.setitem(mnist.DATASETS, "mnist", known)
    with pytest.raises(IdxError, match="these are MNIST files, not Fashion-MNIST"):
        load_dataset("fashion-mnist", tmp_path, download=False)
    assert load_dataset("mnist", tmp_path, download=False).y_train.shape == (30,)
