"""A study's training workers end with the study process: killed outright, it cannot shut its
pool down, and orphaned workers would keep writing into run folders a restarted study resumes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

PARENT = r"""
import sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing, os
from hybridvision.studies.runner import exit_with_parent

def work(parent, pid_file, watch):
    if watch:
        exit_with_parent(parent, poll_s=0.2)
    open(pid_file, "w").write(str(os.getpid()))
    time.sleep(60)

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(work, os.getpid(), sys.argv[1], sys.argv[2] == "1")
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie that no one reaps yet counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    try:
        return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status.read_text().splitlines())
    except OSError:  # no /proc (macOS): the signal test above is the answer
        return True


def _orphan_outlives_parent(tmp_path: Path, watch: bool) -> bool:
    script, pid_file = tmp_path / "parent.py", tmp_path / f"worker{int(watch)}.pid"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), "1" if watch else "0"])
    try:
        deadline = time.time() + 60
        while not pid_file.is_file() or not pid_file.read_text():
            assert time.time() < deadline, "the worker never started"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
    finally:
        parent.kill()  # SIGKILL: no clean shutdown of the pool
        parent.wait()
    deadline = time.time() + 5
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    alive = _alive(worker)
    if alive:
        os.kill(worker, 9)
    return alive


def test_a_worker_ends_when_the_study_is_killed(tmp_path):
    assert not _orphan_outlives_parent(tmp_path, watch=True)
    assert _orphan_outlives_parent(tmp_path, watch=False)  # negative control: without the watch it lives on
