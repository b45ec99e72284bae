"""Run folders under stress: two processes on one folder, a killed writer's leftovers, a full disk, and
checkpoints that do not belong together."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from backprop.checkpoint import atomic_write, load_arrays
from backprop.cli import main
from test_cli import SMALL, offline  # noqa: F401  (offline: the autouse fixture, applied here too)


def python(code: str, **kwargs) -> subprocess.Popen:
    """A Python process running ``code`` in the test's folder."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], text=True, **kwargs)


@pytest.fixture
def holder():
    """Start a process that holds a run folder until killed; yields a function taking the folder."""
    started: list[subprocess.Popen] = []

    def hold(run_dir: str) -> subprocess.Popen:
        proc = python(f"""
            import sys
            from backprop.runs import hold_run_dir
            with hold_run_dir({run_dir!r}):
                print("held", flush=True)
                sys.stdin.read()
            """, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        started.append(proc)
        assert proc.stdout.readline() == "held\n"
        return proc

    yield hold
    for proc in started:
        proc.kill()
        proc.wait()


def test_two_trains_into_one_run_folder_at_once_one_is_refused(tmp_path):
    """Started together, one run trains and the other stops with one line: nothing is mixed."""
    argv = "['train', '--epochs', '2', '--run-dir', 'same', '--seed', '{}', *{}]"
    procs = [python(f"import sys; from backprop.cli import main; sys.exit(main({argv.format(seed, SMALL)}))",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(code for code, _ in results) == [0, 1], results
    winner = 1 + [code for code, _ in results].index(0)
    err = next(err for code, err in results if code == 1)
    assert ("is in use by" in err or "already holds a run" in err) and "Traceback" not in err, err
    _, meta = load_arrays(tmp_path / "same" / "checkpoint.npz")
    assert meta["config"]["seed"] == winner and meta["progress"]["epoch"] == 2
    assert f'"seed": {winner}' in (tmp_path / "same" / "config.json").read_text()


def test_a_held_run_folder_is_refused_naming_the_holder_until_it_dies(tmp_path, holder, capsys):
    assert main(["train", "--epochs", "1", "--run-dir", "run", *SMALL]) == 0
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    proc = holder("run")
    capsys.readouterr()
    for argv in (["train", "--resume", "run", "--epochs", "2", "--no-progress"],
                 ["train", "--epochs", "1", "--run-dir", "run", *SMALL]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"backprop train: error: run is in use by process {proc.pid} on " in err and " since 20" in err, err
        assert err.count("\n") == 1
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == before
    assert main(["eval", "run", "--backend", "numpy"]) == 0  # eval only reads: it works beside a running run
    proc.kill()  # the OS releases the lock of a killed holder
    proc.wait()
    assert main(["train", "--resume", "run", "--epochs", "2", "--no-progress"]) == 0
    assert load_arrays(tmp_path / "run" / "checkpoint.npz")[1]["progress"]["epoch"] == 2


def test_holding_a_new_folder_that_fails_to_start_leaves_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--run-dir", "a/b/run", "--data-dir", "empty", *SMALL]) == 1
    assert "MNIST files not found" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_resume_refuses_a_checkpoint_from_another_run(tmp_path, capsys):
    """config.json of one run beside the checkpoint of another (two runs wrote one folder before there
    was a lock): resuming would train one run's weights under the other's settings."""
    assert main(["train", "--epochs", "1", "--run-dir", "a", "--seed", "1", *SMALL]) == 0
    assert main(["train", "--epochs", "1", "--run-dir", "b", "--seed", "2", *SMALL]) == 0
    shutil.copy(tmp_path / "b" / "checkpoint.npz", tmp_path / "a" / "checkpoint.npz")
    capsys.readouterr()
    assert main(["train", "--resume", "a", "--epochs", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "a/checkpoint.npz belongs to another run than a/config.json (seed 2 there, 1 here)" in err, err


def test_a_run_clears_the_temporaries_that_killed_writes_left(tmp_path):
    """kill -9 during a save leaves atomic_write's temporary; the next run of the folder removes it, and
    nothing else."""
    assert main(["train", "--epochs", "1", "--run-dir", "run", *SMALL]) == 0
    killed = python("""
        import os, signal
        from backprop.checkpoint import atomic_write
        def write(f):
            f.write(b"x" * 100_000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write("run/checkpoint.npz", write)
        """)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    left = list((tmp_path / "run").glob(".checkpoint.npz.*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size == 100_000
    others = [".checkpoint.npz.user-file.tmp", ".data.npz.abcd1234.tmp", "notes.tmp", ".curves.png.abcd1234.tmp",
              ".checkpoint.npz.abcd1234.tmp.keep"]
    for name in others:
        (tmp_path / "run" / name).write_text("not ours")
    assert main(["train", "--resume", "run", "--epochs", "2", "--no-progress"]) == 0
    assert not left[0].exists()
    assert all((tmp_path / "run" / name).exists() for name in others)


def test_a_full_disk_is_one_line_naming_the_file_and_loses_nothing(tmp_path, monkeypatch, capsys):
    assert main(["train", "--epochs", "1", "--run-dir", "run", *SMALL]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.name != ".lock"}

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    capsys.readouterr()
    assert main(["train", "--resume", "run", "--epochs", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err == f"backprop train: error: run/config.json: {os.strerror(errno.ENOSPC)}\n", err
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.name != ".lock"}
    assert after == before  # and no temporaries


def test_atomic_write_names_the_target_and_refuses_a_folder(tmp_path, monkeypatch):
    calls = []
    with pytest.raises(IsADirectoryError, match="cannot write .*: it is a folder"):
        atomic_write(tmp_path, calls.append)
    assert not calls  # refused before any work

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "w.bin", lambda f: f.write(b"data"))
    assert info.value.errno == errno.EROFS and info.value.filename == str(tmp_path / "w.bin")
    assert not list(tmp_path.iterdir())


def test_atomic_write_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "w.bin", lambda f: f.write(b"data"))
    finally:
        os.umask(old)
    assert (tmp_path / "w.bin").stat().st_mode & 0o777 == 0o640


def test_a_lock_file_removed_before_it_was_locked_is_not_a_lock(tmp_path, monkeypatch):
    """A process that opened .lock just as a failing holder removed it must not count its flock on the
    removed file as owning the folder (a third process may hold the new .lock)."""
    import fcntl

    from backprop import runs

    real_flock = fcntl.flock

    def remove_then_flock(fd, op):
        (tmp_path / runs.LOCK).unlink()  # the failing holder's cleanup, between our open and our flock
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", remove_then_flock)
    with pytest.raises(runs.RunInUseError, match="changed hands"):
        runs._lock(tmp_path)
