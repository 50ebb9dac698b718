"""The run-folder lock: one training run at a time writes a run folder.

``run.lock`` in the run folder is held with ``fcntl.flock`` for the whole run and holds its owner (pid,
host, command, start time) as JSON. A second run into the same folder fails at once with a message
naming the first. The kernel drops a flock when its process dies, however it dies (even SIGKILL), so a
lock left by a dead run is simply taken over; its old owner is logged. A forked child (a data-loader
worker) closes its copy of the descriptor at once: a flock lives as long as any copy, and a worker outliving
a killed run by the seconds it takes to notice would otherwise keep the folder locked.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from sct.errors import SCTError
from sct.outputs import writing

log = logging.getLogger(__name__)
LOCK_NAME = "run.lock"
_HELD: set[int] = set()  # descriptors of the locks this process holds


def _drop_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_in_child)


class RunFolderBusyError(SCTError):
    """Another live run holds the run folder's lock (the message names it)."""


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _read_owner(fd: int) -> dict[str, Any] | None:
    raw = os.pread(fd, 1 << 16, 0)
    try:
        owner = json.loads(raw)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def describe_owner(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "a run that left no details"
    return (f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}, "
            f"command: {owner.get('command')}")


class RunLock:
    """An exclusive hold on a run folder; :meth:`release` (or process exit) gives it up."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise RunFolderBusyError(
                f"output_dir {self.path.parent} is in use by another run ({describe_owner(owner)}); wait for it "
                "to finish or stop it, or choose another output_dir"
            ) from None
        previous = _read_owner(fd)
        if previous:
            log.warning("taking over the lock of %s: that run is no longer running (%s)",
                        self.path.parent, describe_owner(previous))
        with writing(self.path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_owner()).encode(), 0)
            os.fsync(fd)
        self._fd: int | None = fd
        self._pid = os.getpid()
        _HELD.add(fd)

    def release(self) -> None:
        """Clear the owner and unlock; the file stays (deleting it would race with a run opening it)."""
        if self._fd is None or os.getpid() != self._pid:  # a forked child has no lock of its own
            return
        fd, self._fd = self._fd, None
        _HELD.discard(fd)
        # A full or read-only disk must not hide the error that ended the run.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock
