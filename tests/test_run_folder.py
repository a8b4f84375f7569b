"""The run folder's lock (one process at a time, stale locks taken over) and the sweep of half-written files."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from messages import raises_naming

from vitlab.training.run_folder import LOCK_NAME, RunFolderBusy, claim, sweep_temporaries


def test_a_live_lock_refuses_a_second_claim_and_is_removed_at_the_end(tmp_path):
    run_dir = tmp_path / "run"
    with claim(run_dir) as lock:
        record = json.loads(lock.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with raises_naming(RunFolderBusy, run_dir, f"process {os.getpid()}"):
            with claim(run_dir):
                pass
        assert lock.is_file()  # the refused claim did not take the lock away
    assert not (run_dir / LOCK_NAME).exists()


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "then"}))
    with claim(run_dir) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"removed the stale lock of process {pid}" in capsys.readouterr().out
    lock = run_dir / LOCK_NAME
    lock.write_text('{"pid": 12')  # cut short by a kill while it was written...
    with pytest.raises(RunFolderBusy, match="is being claimed by another run"):  # ...or still being written
        with claim(run_dir):
            pass
    old = time.time() - 60
    os.utime(lock, (old, old))  # a minute later it can only be a kill's leftover
    with claim(run_dir):
        pass


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(KeyboardInterrupt), claim(tmp_path):
        raise KeyboardInterrupt
    assert not (tmp_path / LOCK_NAME).exists()


def test_sweep_removes_the_runs_own_temporaries_only(tmp_path, capsys):
    ours = [
        tmp_path / ".last.pt.k2j3h4.tmp",
        tmp_path / ".best.pt.abc.tmp",
        tmp_path / ".config.json.x1.tmp",
        tmp_path / ".config.before_step_40.json.q9.tmp",
    ]
    theirs = [tmp_path / "notes.tmp", tmp_path / ".other.pt.abc.tmp", tmp_path / "last.pt"]
    for path in ours + theirs:
        path.write_bytes(b"x" * 1000)
    assert sorted(sweep_temporaries(tmp_path)) == sorted(ours)
    assert sorted(tmp_path.iterdir()) == sorted(theirs)
    [line] = capsys.readouterr().out.splitlines()  # one line for all of them
    assert line.startswith("removed .best.pt.abc.tmp (0.0 MiB), ") and ".last.pt.k2j3h4.tmp (0.0 MiB)" in line
    assert line.endswith(f" from {tmp_path}: left by writes that were interrupted")
    assert sweep_temporaries(tmp_path) == [] and capsys.readouterr().out == ""  # nothing to say: no line


def test_sweep_removes_a_half_written_hparams_file_from_the_tensorboard_folder(tmp_path, capsys):
    from vitlab.training.logs import HPARAMS_FILE

    run_dir, log_dir = tmp_path / "Model" / "r", tmp_path / "TB_log" / "r"
    for folder in (run_dir, log_dir):
        folder.mkdir(parents=True)
    half = log_dir / f".{HPARAMS_FILE}.k2j3.tmp"  # TensorBoard would read it: its name holds "tfevents"
    half.write_bytes(b"x" * 100)
    (log_dir / "events.out.tfevents.123.host").write_bytes(b"")  # the SummaryWriter's own file stays
    (run_dir / ".last.pt.q1.tmp").write_bytes(b"x")
    assert sweep_temporaries(run_dir, log_dir) == [run_dir / ".last.pt.q1.tmp", half]
    assert [p.name for p in log_dir.iterdir()] == ["events.out.tfevents.123.host"]
    assert capsys.readouterr().out.count("\n") == 1
