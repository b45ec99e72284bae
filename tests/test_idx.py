"""The IDX reader and writer: round trips, and every kind of damaged file is a clear IdxError."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from backprop.data.idx import IdxError, encode_idx, read_idx, write_idx
from bounded import gzip_bomb, peak_rss

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, rng, dtype, suffix):
    a = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", a)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if suffix else b"\x00\x00")
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.flags.writeable
    np.testing.assert_array_equal(a, b)


def test_mnist_style_header_is_big_endian(tmp_path):
    labels = np.array([7, 2, 1], dtype=np.uint8)
    raw = encode_idx(labels)
    assert raw == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])
    images = np.zeros((2, 28, 28), np.uint8)
    assert encode_idx(images)[:16] == struct.pack(">IIII", 0x803, 2, 28, 28)
    ints = np.array([1, 256], dtype=np.int32)
    assert encode_idx(ints)[-8:] == b"\x00\x00\x00\x01\x00\x00\x01\x00"


def test_gzip_output_is_deterministic_and_compress_flag(tmp_path):
    a = np.arange(100, dtype=np.uint8)
    one, two = write_idx(tmp_path / "one.gz", a), write_idx(tmp_path / "two.gz", a)
    assert one.read_bytes() == two.read_bytes()
    plain = write_idx(tmp_path / "plain.gz", a, compress=False)
    assert plain.read_bytes() == encode_idx(a)
    np.testing.assert_array_equal(read_idx(plain), a)  # detected by content, not by name


def test_unsupported_arrays():
    with pytest.raises(TypeError, match="uint8"):
        encode_idx(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="1 to 255"):
        encode_idx(np.zeros((), np.uint8))


GOOD = encode_idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))

CORRUPT = {
    "empty": (b"", "too short"),
    "foreign": (b"\x89PNG\r\n\x1a\n" + bytes(40), "not an IDX file"),
    "text": (b"hello, this is not a data file\n", "not an IDX file"),
    "unknown type code": (b"\x00\x00\x07\x01" + bytes(8), "not an IDX file"),
    "zero dimensions": (b"\x00\x00\x08\x00", "0 dimensions"),
    "truncated header": (GOOD[:10], "truncated inside the header"),
    "truncated data": (GOOD[:-5], "truncated: shape"),
    "trailing bytes": (GOOD + b"\x00\x00", "unexpected bytes"),
    "wrong dimensions": (GOOD[:4] + struct.pack(">III", 2, 3, 5) + GOOD[16:], "truncated"),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_corrupt_raw_files_name_the_file(tmp_path, case):
    data, message = CORRUPT[case]
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(IdxError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("case", ["truncated data", "trailing bytes", "foreign"])
def test_corrupt_contents_inside_good_gzip(tmp_path, case):
    data, message = CORRUPT[case]
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(IdxError, match=message):
        read_idx(path)


def test_damaged_gzip_streams(tmp_path):
    packed = gzip.compress(encode_idx((np.arange(1200) % 251).astype(np.uint8).reshape(50, 24)))
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(IdxError, match="damaged or truncated gzip") as info:
        read_idx(truncated)
    assert str(truncated) in str(info.value)
    flipped = bytearray(packed)
    flipped[-6] ^= 0xFF  # inside the CRC-32 / size trailer
    bad_crc = tmp_path / "crc.gz"
    bad_crc.write_bytes(bytes(flipped))
    with pytest.raises(IdxError, match="damaged or truncated gzip"):
        read_idx(bad_crc)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_a_header_whose_size_overflows_64_bits_is_an_error_naming_the_file(tmp_path):
    """2^22 * 2^22 * 2^20 wraps to 0 in int64: the size check must not be fooled into reading nothing."""
    path = tmp_path / "wild-idx3-ubyte"
    path.write_bytes(struct.pack(">HBB3I", 0, 8, 3, 1 << 22, 1 << 22, 1 << 20))
    with pytest.raises(IdxError, match="wild-idx3-ubyte: the header declares shape .* more than the"):
        read_idx(path)


def test_a_header_claiming_more_than_the_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "big-idx1-ubyte"
    path.write_bytes(encode_idx(np.zeros(100, np.uint8)))
    with pytest.raises(IdxError, match=r"big-idx1-ubyte: the header declares shape \(100,\) of uint8, 100 bytes, "
                                       "more than the 99 allowed"):
        read_idx(path, max_bytes=99)
    np.testing.assert_array_equal(read_idx(path, max_bytes=100), np.zeros(100, np.uint8))


def test_a_gzip_bomb_after_the_data_is_refused_without_inflating_it(tmp_path):
    """10 bytes of data, then 1 GiB of zeros (4.6 MB gzipped): only the declared bytes are decompressed."""
    path = gzip_bomb(tmp_path / "bomb-idx1-ubyte.gz", encode_idx(np.arange(10, dtype=np.uint8)), 1 << 30)
    error, mib = peak_rss(f"from backprop.data.idx import read_idx\nread_idx({str(path)!r})")
    assert error.startswith(f"IdxError: {path}: unexpected bytes after the data of shape (10,)"), error
    assert mib < 300, f"peak RSS {mib} MiB"


@pytest.mark.parametrize("kind", ["folder", "device"])
def test_a_folder_or_device_is_an_idx_error_not_a_hang(tmp_path, kind):
    path = tmp_path / "train-images-idx3-ubyte"
    if kind == "folder":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")  # read whole, it never ends
    with pytest.raises(IdxError, match="not a file"):
        read_idx(path)


def test_a_symlink_to_a_good_file_reads(tmp_path):
    target = write_idx(tmp_path / "real.gz", np.arange(5, dtype=np.int16))
    (tmp_path / "link").symlink_to(target)
    np.testing.assert_array_equal(read_idx(tmp_path / "link"), np.arange(5))
