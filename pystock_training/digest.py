"""The data file's identity: sha256, size and prefix digests, taken from the bytes as they are read.

The loader parses the file through a ``HashingReader``, so the digest recorded for a model is the
digest of exactly the bytes it was trained on, even if the file is rewritten while it is read.
The reader also keeps the digest of the first N bytes for any N asked for in advance: that is how
"this file is the champion's file with rows appended" is verified at no extra pass (sha256 is a
running hash, so the prefix digest is a copy of its state at offset N).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pystock_training.errors import DataError

CHUNK_BYTES = 1 << 20

# What a path can be besides a regular file, as `ls -l` users call it.
_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


@dataclass(frozen=True)
class Prefix:
    """The digest of a file's first ``size`` bytes, and whether they end at a line break."""

    size: int
    sha256: str
    ends_line: bool


@dataclass(frozen=True)
class FileDigest:
    """What was read: the sha256 of every byte, how many, and the prefixes asked for."""

    sha256: str
    size: int
    prefixes: dict[int, Prefix] = field(default_factory=dict)

    def is_append_of(self, sha256: str, size: int) -> bool:
        """Whether this file starts with exactly the bytes of a file of that digest and size.

        A prefix that ends mid-line would have its last row changed by what follows, so only a
        prefix that ends at a line break counts (a Parquet file never starts with another one).
        """
        if size == self.size:
            return sha256 == self.sha256
        prefix = self.prefixes.get(size)
        return prefix is not None and prefix.ends_line and prefix.sha256 == sha256


class HashingReader(io.RawIOBase):
    """A read-only binary stream over a file that hashes each byte once, as it is handed out.

    ``prefix_sizes`` are the offsets whose prefix digests are kept. ``finish`` reads whatever the
    consumer left unread (pyarrow may stop at the last row) and returns the digest of the whole.
    """

    def __init__(self, handle: BinaryIO, prefix_sizes: tuple[int, ...] = ()) -> None:
        super().__init__()
        self._handle = handle
        self._hash = hashlib.sha256()
        self._offset = 0
        self._last_byte = b""
        self._wanted = sorted({size for size in prefix_sizes if size > 0})
        self._prefixes: dict[int, Prefix] = {}

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._handle.readinto(buffer)
        if count:
            self._update(memoryview(buffer)[:count])
        return count or 0

    def finish(self) -> FileDigest:
        """Read to the end and return the digest of every byte."""
        for chunk in iter(lambda: self._handle.read(CHUNK_BYTES), b""):
            self._update(memoryview(chunk))
        return FileDigest(self._hash.hexdigest(), self._offset, dict(self._prefixes))

    def _update(self, data: memoryview) -> None:
        # A wanted prefix may end inside this chunk: hash up to it, keep a copy, go on.
        while self._wanted and self._wanted[0] <= self._offset + len(data):
            cut = self._wanted.pop(0) - self._offset
            self._hash.update(data[:cut])
            if cut:
                self._last_byte = bytes(data[cut - 1 : cut])
            self._offset += cut
            self._prefixes[self._offset] = Prefix(
                self._offset, self._hash.copy().hexdigest(), self._last_byte == b"\n"
            )
            data = data[cut:]
        if len(data):
            self._hash.update(data)
            self._offset += len(data)
            self._last_byte = bytes(data[-1:])


def not_regular(path: Path, mode: int) -> DataError:
    """The one error for a data file that is not a regular file (a directory, a FIFO, a device)."""
    if stat.S_ISDIR(mode):
        return DataError(path, "is a directory, expected a CSV or Parquet file")
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return DataError(path, f"is {kind}, expected a regular CSV or Parquet file")


def check_regular_file(path: str | Path) -> Path:
    """The resolved path of a readable regular file, opened and closed again to be sure.

    Raises:
        DataError: The path is missing, unreadable or anything but a regular file.
    """
    path = Path(path).expanduser()
    resolved = path.resolve()
    if not path.is_absolute() and not resolved.exists():
        raise DataError(resolved, "no such file (relative paths resolve against the project directory)")
    with open_regular(resolved):
        return resolved


def open_regular(path: Path) -> BinaryIO:
    """Open a data file for reading, refusing anything but a regular file.

    Opened non-blocking and checked on the open descriptor: opening a FIFO would otherwise block
    until a writer comes, and reading /dev/zero never ends. The check on the descriptor also
    holds when the path is swapped for a FIFO after an earlier check.

    Raises:
        DataError: The file is missing, unreadable or not a regular file.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror})") from exc
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise not_regular(path, mode)
    # O_NONBLOCK means nothing for a regular file; cleared anyway so the handle is ordinary.
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def file_digest(path: str | Path, prefix_sizes: tuple[int, ...] = ()) -> FileDigest:
    """The digest of a file read in chunks, so a large file never sits in memory.

    Raises:
        DataError: The file is missing, unreadable or not a regular file.
    """
    path = Path(path)
    with open_regular(path) as handle:
        try:
            return HashingReader(handle, prefix_sizes).finish()
        except OSError as exc:
            raise DataError(path, f"cannot be read ({exc.strerror})") from exc
