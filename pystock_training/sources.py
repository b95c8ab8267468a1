"""Where the training table is: one file, or part files (a folder, a glob, an fsspec URL).

The parts are Parquet or CSV files, read in sorted name order, which is time order, so the
table is their rows one part after another (data/parts.py reads them, each checked on its own).

The table's digest is a manifest: the sha256 of one line ``"<part sha256> <part size>\\n"`` per
part, in order. Its size is the parts' total bytes, and it keeps the manifest digest of every
leading run of parts as a prefix at that run's total size, so "this table is the champion's parts
with parts appended" is verified as it is for one file with rows appended. Computing it reads
every byte once (sha256 at disk speed); nothing else about a part (its name, its date) counts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pystock_training.digest import CHUNK_BYTES, FileDigest, Prefix, file_digest
from pystock_training.errors import DataError, first_line

PART_SUFFIXES = (".parquet", ".pq", ".csv")
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class Part:
    """One part file: its local path or fsspec URL, and its size in bytes."""

    url: str
    size: int

    @property
    def is_local(self) -> bool:
        return "://" not in self.url

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def is_partitioned(data_file: str | Path) -> bool:
    """Whether ``data_file`` names parts (a folder, a glob or a URL) rather than one local file."""
    text = str(data_file)
    if "://" in text or _GLOB_CHARACTERS & set(text):
        return True
    return Path(text).expanduser().is_dir()


def list_parts(data_file: str | Path) -> list[Part]:
    """The part files ``data_file`` names, in sorted name order.

    A folder is searched recursively (``year=2026/part-0.parquet`` works), and so is a folder a
    glob matches. Files with other suffixes are skipped, and so is anything whose name, or the
    name of a folder it is in below the one given, starts with ``.`` or ``_`` (``_SUCCESS``,
    ``_metadata``, a writer's ``_temporary/`` or ``.staging/``).

    Raises:
        DataError: Nothing matches, or the folder or bucket cannot be listed.
    """
    text = str(data_file)
    if "://" not in text:
        text = str(Path(text).expanduser().absolute())
    import fsspec  # only for parts: the driver's start with one file does not pay for it

    try:
        fs, root = fsspec.core.url_to_fs(text)
        found: dict[str, dict[str, Any]] = {}
        if _GLOB_CHARACTERS & set(root):
            # The folders a glob matches count from the glob's fixed start.
            base = root[: min(root.index(char) for char in _GLOB_CHARACTERS if char in root)].rsplit("/", 1)[
                0
            ]
            for path in fs.glob(root):
                found |= _files_under(fs, path, base)
        elif fs.isdir(root):
            found = _files_under(fs, root, root)
        elif fs.exists(root):
            found = {root: fs.info(root)}
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(data_file, f"cannot list the parts ({first_line(exc)})") from exc
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    parts = []
    for path in sorted(found):
        if not path.rsplit("/", 1)[-1].lower().endswith(PART_SUFFIXES):
            continue
        url = path if protocol in ("file", "local") else fs.unstrip_protocol(path)
        parts.append(Part(url, int(found[path].get("size") or 0)))
    if not parts:
        raise DataError(data_file, f"no part files ({', '.join(PART_SUFFIXES)}) found")
    return parts


def _files_under(fs: Any, path: str, base: str) -> dict[str, dict[str, Any]]:
    """The files at or under ``path`` with no hidden name (``.``, ``_``) below ``base``."""
    info = fs.info(path)
    found = fs.find(path, detail=True) if info["type"] == "directory" else {path: info}
    return {
        inner: detail
        for inner, detail in found.items()
        if detail.get("type") == "file"
        and not any(name.startswith((".", "_")) for name in inner[len(base) :].split("/") if name)
    }


def source_name(data_file: str | Path) -> Path | str:
    """How a data source is named in records and errors: a resolved local path, or the URL/glob as given."""
    text = str(data_file)
    if "://" in text or _GLOB_CHARACTERS & set(text):
        return text
    return Path(text).expanduser().resolve()


def check_source(data_file: str | Path) -> str:
    """``data_file`` as the steps should receive it: a resolved local path, or the URL or glob.

    Raises:
        DataError: A single file that is missing or not a regular file, or parts that cannot
            be listed or that do not exist.
    """
    from pystock_training.digest import check_regular_file

    if is_partitioned(data_file):
        list_parts(data_file)
        return str(source_name(data_file))
    return str(check_regular_file(data_file))


def source_digest(data_file: str | Path) -> FileDigest:
    """The digest of a data file, or the manifest digest of its parts (see the module docstring).

    Raises:
        DataError: A file or part is missing, unreadable or not a regular file.
    """
    if not is_partitioned(data_file):
        return file_digest(Path(data_file).expanduser().resolve())
    return manifest_digest([(part_sha256(part), part.size) for part in list_parts(data_file)])


def part_sha256(part: Part) -> str:
    """The sha256 of one part's bytes, read in chunks.

    Raises:
        DataError: The part cannot be read.
    """
    if part.is_local:
        return file_digest(Path(part.url)).sha256
    import fsspec

    digest = hashlib.sha256()
    try:
        with fsspec.open(part.url, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                digest.update(chunk)
    except (OSError, ValueError) as exc:
        raise DataError(part.url, f"cannot be read ({first_line(exc)})") from exc
    return digest.hexdigest()


def manifest_digest(records: list[tuple[str, int]]) -> FileDigest:
    """The manifest digest of parts given as ``(sha256, size)``, with every leading run as a prefix."""
    digest = hashlib.sha256()
    prefixes: dict[int, Prefix] = {}
    total = 0
    for sha256, size in records:
        digest.update(f"{sha256} {size}\n".encode())
        total += size
        prefixes[total] = Prefix(total, digest.copy().hexdigest(), ends_line=True)
    return FileDigest(digest.hexdigest(), total, prefixes)
