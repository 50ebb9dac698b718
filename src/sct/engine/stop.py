"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (what job schedulers send before killing a job).

While :meth:`StopRequest.catching` is active, the first SIGINT/SIGTERM only records the signal; the
training loop checks it at the next optimiser-step boundary (all processes agree through the step's
all-reduce), saves a resumable checkpoint and exits with ``128 + signal`` (130 for SIGINT, 143 for
SIGTERM). A second signal stops at once, unless it comes within ``DUPLICATE_WINDOW_S`` of the first: Ctrl-C
under ``torchrun`` reaches every process from the terminal and then again from ``torchrun``, which
forwards it, and a scheduler may signal the launcher and the processes alike.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator

from sct.errors import SCTError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DUPLICATE_WINDOW_S = 2.0


class Interrupted(SCTError):
    """The run stopped on a signal after saving a checkpoint; the message says how to resume."""

    def __init__(self, signum: int, message: str, reported: bool = False) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
        self.reported = reported


class StopRequest:
    """The signal received since :meth:`catching` began (0: none)."""

    def __init__(self) -> None:
        self.signum = 0
        self.announce = True
        self._first_at = 0.0

    def _handle(self, signum: int, frame) -> None:
        if self.signum:
            if time.monotonic() - self._first_at > DUPLICATE_WINDOW_S:
                raise KeyboardInterrupt
            return
        self.signum, self._first_at = signum, time.monotonic()
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: stopping after this optimiser step and saving a checkpoint "
                  "(send it again to stop at once)", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def catching(self, announce: bool = True) -> Iterator[StopRequest]:
        """Record SIGINT/SIGTERM instead of dying, for the duration of the block (main thread only)."""
        self.announce = announce
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def ignore_in_worker(_worker_id: int) -> None:
    """``DataLoader`` ``worker_init_fn``: Ctrl-C reaches the whole process group; workers leave it to the
    main process, which stops at a step boundary and then shuts them down."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
