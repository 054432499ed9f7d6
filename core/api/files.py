"""Reading a file a user named (a credentials file, a profile) without being led astray.

A path in a profile can name anything: `/dev/zero` (an endless read, then MemoryError), a
FIFO (a read that never returns), a directory. `read_regular` opens without following the
open into a FIFO's wait (O_NONBLOCK), checks the opened file is a regular one, and reads at
most a cap, so a wrong path is one clear error instead of a hang or a crash.

In the public API because provider plugins read their credentials files with it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: Credentials files are a few kilobytes; profiles a few hundred.
DEFAULT_CAP = 1 << 20


class UnreadableFile(OSError):
    """Not a regular file, or too large: `str()` says which, in a few words (an `open`
    failure is the OSError itself, FileNotFoundError included)."""


def read_regular(path: Path | str, *, cap: int = DEFAULT_CAP) -> bytes:
    """The bytes of the regular file `path`, refusing anything else or more than `cap`.
    Errors are OSErrors: say them with `reason`."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile("not a regular file")
        if info.st_size > cap:
            raise UnreadableFile(f"larger than {cap} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, min(65536, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                raise UnreadableFile(f"larger than {cap} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_regular_text(path: Path | str, *, cap: int = DEFAULT_CAP) -> str:
    """`read_regular` decoded as UTF-8 (a decoding error is an UnreadableFile too)."""
    data = read_regular(path, cap=cap)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableFile("not UTF-8 text") from None


def reason(exc: OSError) -> str:
    """Why a read failed, in a few words: the system's message, or ours."""
    return exc.strerror or str(exc)
