"""Where outputs go: checked before any work starts, and OS errors while writing turned into one message.

``check_writable_dir(path, option)`` proves that a folder exists or can be created and accepts a file,
without leaving anything behind; ``writing(path)`` turns the OS errors of a write (disk full, read-only
file system, no permission, a file where a folder should be) into an :class:`OutputError` that names
the path, instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sct.errors import OutputError

# The errors that mean "this location cannot take the output", as opposed to a bug.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                           errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG})
# Less free space than this is reported before the work, not after it.
MIN_FREE_BYTES = 1 << 20


def reason(err: OSError) -> str:
    """The OS's words for ``err`` (``No space left on device``), without Python's ``[Errno 28]``."""
    return err.strerror or str(err)


def is_output_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in OUTPUT_ERRNOS


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself, or the nearest folder above it that exists (what creating ``path`` would write in)."""
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        parent = probe.parent
        if parent.exists() and not parent.is_dir():
            return parent
        probe = parent
    return probe


def check_writable_dir(path: str | os.PathLike, option: str) -> Path:
    """Raise :class:`OutputError` naming ``option`` unless folder ``path`` exists or can be made and takes files."""
    path = Path(path)
    where = _existing_ancestor(path)
    if not where.is_dir():
        raise OutputError(f"{option}={path} cannot be written: {where} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sct-write-check-", dir=where)
        os.close(fd)
        os.unlink(probe)
        free = shutil.disk_usage(where).free
    except OSError as err:
        raise OutputError(f"{option}={path} cannot be written: {where}: {reason(err)}") from None
    if free < MIN_FREE_BYTES:
        raise OutputError(f"{option}={path} cannot be written: {where}: no space left on the device "
                          f"({free} bytes free)")
    return path


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OS error from writing ``path`` into an :class:`OutputError` naming it; others pass through."""
    try:
        yield
    except OSError as err:
        if not is_output_error(err):
            raise
        raise OutputError(f"cannot write {path}: {reason(err)}") from None
