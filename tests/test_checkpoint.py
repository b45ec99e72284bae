"""Loading checkpoints from hostile files: bombs, forged headers and duplicate members are refused
before anything big is allocated, with a CheckpointError naming the file; honest oddities (byte order,
Fortran order) load."""

from __future__ import annotations

import io
import warnings
import zipfile

import numpy as np
import pytest

import backprop as bp
from backprop import checkpoint
from backprop.checkpoint import META_KEY, CheckpointError, check_arrays, load_arrays
from bounded import peak_rss


def small_model(seed: int = 0) -> bp.Sequential:
    bp.manual_seed(seed)
    return bp.Sequential(bp.Linear(3, 4), bp.ReLU(), bp.Linear(4, 2))


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array, allow_pickle=False)
    return out.getvalue()


def header(fields: dict) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, fields)
    return out.getvalue()


def rewrite(src, dst, replace=None, add=()):
    """Copy the checkpoint ``src`` to ``dst`` with members replaced (name -> bytes) or added."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate names some tests want
        for name in zin.namelist():
            zout.writestr(name, replace.get(name, zin.read(name)))
        for name, data in add:
            zout.writestr(name, data)
    return dst


@pytest.fixture
def saved(tmp_path):
    return small_model(seed=3).save(tmp_path / "good.npz")


def test_a_compressed_bomb_member_is_refused_unread(saved, tmp_path):
    """A 1 GiB member of zeros deflates to 1 MB; the file is refused from its zip directory."""
    path = tmp_path / "bomb.npz"
    rewrite(saved, path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf, \
            zf.open("extra.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (1 << 30,)})
        for _ in range(1 << 10):
            f.write(bytes(1 << 20))
    error, mib = peak_rss(f"from backprop.checkpoint import load_arrays\nload_arrays({str(path)!r})")
    assert error.startswith(f"CheckpointError: {path}: its members claim 1,073,7"), error
    assert "more than the file's" in error
    assert mib < 300, f"peak RSS {mib} MiB"


def test_a_header_declaring_a_trillion_elements_is_refused_before_allocating(saved, tmp_path):
    forged = header({"descr": "<f8", "fortran_order": False, "shape": (10**12,)}) + bytes(80)
    path = rewrite(saved, tmp_path / "forged.npz", {"0.W.npy": forged})
    with pytest.raises(CheckpointError, match=r"forged.npz: 0.W declares shape \(1000000000000,\) of float64 "
                                              r"\(8,000,000,000,000 bytes\) but its member holds 80 bytes"):
        small_model().load(path)
    with pytest.raises(CheckpointError, match="forged.npz: 0.W declares shape"):
        load_arrays(path)


def test_duplicate_members_are_refused(saved, tmp_path):
    path = rewrite(saved, tmp_path / "twice.npz", add=[("0.W.npy", npy(np.ones((4, 3), np.float32)))])
    with pytest.raises(CheckpointError, match=r"twice.npz: members \['0.W.npy'\] appear more than once"):
        small_model().load(path)


def test_unexpected_or_misshapen_members_are_refused_before_any_array_is_read(saved, tmp_path, monkeypatch):
    reads = []
    real = checkpoint.read_exactly
    monkeypatch.setattr(checkpoint, "read_exactly", lambda f, size: reads.append(size) or real(f, size))
    extra = rewrite(saved, tmp_path / "extra.npz", add=[("big.npy", npy(np.zeros(1000)))])
    with pytest.raises(CheckpointError, match=r"extra.npz: does not fit this model \(missing \[\], unexpected "
                                              r"\['big'\]\)"):
        small_model().load(extra)
    wide = rewrite(saved, tmp_path / "wide.npz", {"0.W.npy": npy(np.zeros((5, 3), np.float32))})
    with pytest.raises(CheckpointError, match=r"wide.npz: 0.W has shape \(5, 3\), the model expects"):
        small_model().load(wide)
    assert len(reads) == 2  # the metadata of each file, nothing else


def test_an_int32_member_does_not_advise_an_unsupported_conversion(saved, tmp_path):
    path = rewrite(saved, tmp_path / "int.npz", {"0.W.npy": npy(np.zeros((3, 4), np.int32))})
    with pytest.raises(CheckpointError, match="int.npz: 0.W is int32, the model is float32; models hold float32 "
                                              "or float64 arrays") as info:
        small_model().load(path)
    assert "model.to" not in str(info.value)


def test_big_endian_and_fortran_order_members_load_as_the_same_numbers(saved, tmp_path):
    model = small_model(seed=3)
    w = model[0].W.data
    path = rewrite(saved, tmp_path / "odd.npz", {"0.W.npy": npy(w.astype(">f4")),
                                                 "2.W.npy": npy(np.asfortranarray(model[2].W.data))})
    arrays, _ = load_arrays(path)
    assert arrays["0.W"].dtype == np.float32 and arrays["0.W"].dtype.isnative
    np.testing.assert_array_equal(arrays["0.W"], w)
    np.testing.assert_array_equal(small_model().load(path)[2].W.data, model[2].W.data)
    state = {**model.state_dict(), "0.W": w.astype(">f4")}
    with pytest.raises(CheckpointError, match=r"0.W is >f4, the model is float32; convert it to native byte "
                                              r"order with a.astype\('float32'\)"):
        small_model().load_state_dict(state)


def test_other_damage_is_a_checkpoint_error_naming_the_file(saved, tmp_path):
    cases = {
        "object.npz": ({"0.W.npy": npy(np.zeros((3, 4), np.float32)).replace(b"'<f4'", b"'|O' ", 1)},
                       "0.W has dtype object"),
        "negative.npz": ({"0.W.npy": header({"descr": "<f4", "fortran_order": False, "shape": (-3, 4)})},
                         r"0.W declares the negative shape \(-3, 4\)"),
        "cut-header.npz": ({"0.W.npy": npy(np.zeros((3, 4), np.float32)).replace(b"(3, 4)", b"(3, 4"[:5], 1)},
                           r"members \['0.W'\] are not arrays"),
        "meta.npz": ({f"{META_KEY}.npy": npy(np.zeros(3))}, f"{META_KEY} is not a JSON string"),
    }
    for name, (replace, message) in cases.items():
        with pytest.raises(CheckpointError, match=message) as info:
            small_model().load(rewrite(saved, tmp_path / name, replace))
        assert name in str(info.value)
    with pytest.raises(CheckpointError, match="not a checkpoint file"):
        small_model().load(tmp_path)
    (tmp_path / "dev.npz").symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match="not a checkpoint file"):
        small_model().load(tmp_path / "dev.npz")
    (tmp_path / "link.npz").symlink_to(saved)
    np.testing.assert_array_equal(small_model().load(tmp_path / "link.npz")[0].W.data, small_model(3)[0].W.data)
    np.savez_compressed(tmp_path / "packed.npz", **{META_KEY: np.array("{}")}, a=np.zeros(1000))
    with pytest.raises(CheckpointError, match="packed.npz: its members claim"):
        load_arrays(tmp_path / "packed.npz")


def test_check_arrays_still_refuses_non_finite_values():
    with pytest.raises(CheckpointError, match="src: a holds NaN"):
        check_arrays("src", {"a": np.array([np.nan], np.float32)}, {"a": ((1,), np.dtype(np.float32))})
