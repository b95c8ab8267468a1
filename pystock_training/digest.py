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
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1 << 20


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


def file_digest(path: str | Path, prefix_sizes: tuple[int, ...] = ()) -> FileDigest:
    """The digest of a file read in chunks, so a large file never sits in memory."""
    with Path(path).open("rb") as handle:
        return HashingReader(handle, prefix_sizes).finish()
