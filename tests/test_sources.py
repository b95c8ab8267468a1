"""Where the training table is: part listing, the manifest digest, and the driver's source check."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fsspec
import pytest

from pystock_training.data import load_dataset
from pystock_training.data.parts import load_part, load_parts
from pystock_training.errors import DataError
from pystock_training.sources import (
    Part,
    check_source,
    is_partitioned,
    list_parts,
    manifest_digest,
    source_digest,
)
from tests.conftest import signal_frame
from tests.dask_cluster import write_parts


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def listed(data_file: str | Path, root: Path) -> list[str]:
    return [str(Path(part.url).relative_to(root)) for part in list_parts(data_file)]


def test_a_folder_lists_its_parts_recursively_in_name_order_and_skips_markers(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "part-00002.parquet",
        "part-00000.csv",
        "part-00001.PQ",
        "year=2027/part-00000.parquet",
        "year=2026/month=12/part-00000.parquet",
        # What writers leave beside the parts: markers, metadata, checksums, temp files, notes.
        "_SUCCESS",
        "_metadata",
        "_common_metadata.parquet",
        ".part-00003.parquet.crc",
        ".part-00004.parquet",
        "README.md",
        "part-00005.json",
    )
    assert listed(tmp_path, tmp_path) == [
        "part-00000.csv",
        "part-00001.PQ",
        "part-00002.parquet",
        "year=2026/month=12/part-00000.parquet",
        "year=2027/part-00000.parquet",
    ]
    parts = list_parts(tmp_path)
    assert all(part.is_local for part in parts)
    # Each file holds its own relative name: the sizes are the files'.
    assert [part.size for part in parts] == [len(name.encode()) for name in listed(tmp_path, tmp_path)]


def test_names_sort_as_text_so_part_numbers_need_their_zeros(tmp_path: Path) -> None:
    # Sorted name order is time order only when the names sort that way: part-10 before part-2.
    touch(tmp_path, "part-2.csv", "part-10.csv", "part-1.csv")
    assert listed(tmp_path, tmp_path) == ["part-1.csv", "part-10.csv", "part-2.csv"]


def test_parts_inside_hidden_folders_are_skipped(tmp_path: Path) -> None:
    # An upstream writer still at work: Spark stages its task output under _temporary/, others
    # under a dot folder they rename into place. Those rows are not the table (yet).
    touch(
        tmp_path,
        "part-00000.parquet",
        "_temporary/0/task_0/part-00000.parquet",
        ".staging/part-00001.parquet",
    )
    assert listed(tmp_path, tmp_path) == ["part-00000.parquet"]


def test_a_glob_selects_the_matching_files_in_name_order(tmp_path: Path) -> None:
    touch(tmp_path, "b-1.parquet", "a-2.parquet", "a-1.parquet", "a-3.csv", "_a-0.parquet")
    assert listed(tmp_path / "a-*.parquet", tmp_path) == ["a-1.parquet", "a-2.parquet"]
    assert listed(tmp_path / "*-1.*", tmp_path) == ["a-1.parquet", "b-1.parquet"]
    assert is_partitioned(tmp_path / "a-*.parquet")


def test_a_glob_that_matches_folders_takes_the_parts_inside_them(tmp_path: Path) -> None:
    touch(tmp_path, "2026-01/part-0.parquet", "2026-02/part-0.parquet", "2025-12/part-0.parquet")
    assert listed(tmp_path / "2026-*", tmp_path) == ["2026-01/part-0.parquet", "2026-02/part-0.parquet"]


def test_a_file_url_lists_the_same_parts_as_the_path(tmp_path: Path) -> None:
    touch(tmp_path, "part-1.parquet", "part-0.parquet", "_SUCCESS")
    assert list_parts(f"file://{tmp_path}") == list_parts(tmp_path)
    assert is_partitioned(f"file://{tmp_path}")


def test_a_url_that_is_not_local_keeps_its_protocol(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    root = f"/pystock-test-{os.getpid()}-{tmp_path.name}"
    try:
        for name in ("part-1.csv", "part-0.csv", "_SUCCESS"):
            fs.pipe(f"{root}/{name}", b"0,1\n")
        parts = list_parts(f"memory://{root}")
        assert [part.url for part in parts] == [f"memory://{root}/part-0.csv", f"memory://{root}/part-1.csv"]
        assert [part.name for part in parts] == ["part-0.csv", "part-1.csv"]
        assert not any(part.is_local for part in parts)
    finally:
        fs.rm(root, recursive=True)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda root: root, "no part files (.parquet, .pq, .csv) found"),
        (lambda root: touch(root, "_SUCCESS", "notes.txt", ".part-0.parquet") or root, "no part files"),
        (lambda root: root / "*.parquet", "no part files"),
        (lambda root: f"file://{root}/nowhere", "no part files"),
        (lambda root: "nosuchprotocol://bucket/parts", "cannot list the parts (Protocol not known"),
    ],
)
def test_no_parts_is_one_error_naming_the_source(tmp_path: Path, make, problem: str) -> None:
    data_file = make(tmp_path)
    with pytest.raises(DataError, match=r"^.+: ") as raised:
        list_parts(data_file)
    assert problem in str(raised.value)
    assert str(raised.value).startswith(str(data_file))
    assert "\n" not in str(raised.value)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def parts(tmp_path: Path) -> list[Path]:
    """Three real Parquet parts of one table."""
    return write_parts(signal_frame(n_rows=300).rename(columns=str), tmp_path / "parts", 3)


def test_the_manifest_digest_is_the_sha256_of_one_line_per_part(parts: list[Path]) -> None:
    lines = "".join(f"{sha256_of(path)} {path.stat().st_size}\n" for path in parts)
    digest = source_digest(parts[0].parent)
    assert digest.sha256 == hashlib.sha256(lines.encode()).hexdigest()
    assert digest.size == sum(path.stat().st_size for path in parts)
    # The same from the (sha256, size) records, as the dask engine builds it from its scans.
    records = [(sha256_of(path), path.stat().st_size) for path in parts]
    assert manifest_digest(records).sha256 == digest.sha256


def test_the_manifest_digest_changes_with_any_part_and_with_their_order(parts: list[Path]) -> None:
    folder = parts[0].parent
    before = source_digest(folder).sha256
    # One byte of the middle part, same size: the manifest is over the bytes, not names or sizes.
    data = bytearray(parts[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    original = parts[1].read_bytes()
    parts[1].write_bytes(bytes(data))
    assert source_digest(folder).sha256 != before
    parts[1].write_bytes(original)
    assert source_digest(folder).sha256 == before
    # The same files in another order are another table (the rows in another time order).
    parts[0].rename(folder / "part-00009.parquet")
    assert source_digest(folder).sha256 != before
    # Names alone do not count: the same bytes in the same order under other names.
    (folder / "part-00009.parquet").rename(parts[0])
    for index, path in enumerate(parts):
        path.rename(folder / f"day-{index}.parquet")
    assert source_digest(folder).sha256 == before


def test_appended_parts_are_verifiable_as_an_append(parts: list[Path], tmp_path: Path) -> None:
    folder = parts[0].parent
    first_two = tmp_path / "first-two"
    first_two.mkdir()
    for path in parts[:2]:
        (first_two / path.name).write_bytes(path.read_bytes())
    old, new = source_digest(first_two), source_digest(folder)
    assert new.is_append_of(old.sha256, old.size)
    # Every leading run of parts is a prefix at its total size; a cut inside a part is not.
    assert sorted(new.prefixes) == [sum(path.stat().st_size for path in parts[:count]) for count in (1, 2, 3)]
    assert not new.is_append_of(old.sha256, old.size - 1)
    # The same two parts in the other order are not what the table starts with.
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    for name, path in zip(("a.parquet", "b.parquet"), (parts[1], parts[0]), strict=True):
        (swapped / name).write_bytes(path.read_bytes())
    assert not new.is_append_of(source_digest(swapped).sha256, old.size)
    # A changed earlier part is no append, however many parts follow.
    data = bytearray(parts[0].read_bytes())
    data[-10] ^= 0xFF
    parts[0].write_bytes(bytes(data))
    assert not source_digest(folder).is_append_of(old.sha256, old.size)


def test_source_digest_is_the_digest_load_parts_records(parts: list[Path]) -> None:
    folder = parts[0].parent
    loaded = load_parts(folder)
    assert loaded.digest == source_digest(folder)
    assert loaded.n_rows == 300
    # One part's digest is that of its file, as for a single data file.
    assert load_part(Part(str(parts[1]), parts[1].stat().st_size)).digest.sha256 == sha256_of(parts[1])
    assert source_digest(parts[1]) == load_dataset(parts[1]).digest


def test_a_remote_part_reads_as_the_local_one_and_its_errors_name_the_url(
    parts: list[Path], tmp_path: Path
) -> None:
    fs = fsspec.filesystem("memory")
    root = f"/pystock-test-{os.getpid()}-{tmp_path.name}"
    try:
        for path in parts:
            fs.pipe(f"{root}/{path.name}", path.read_bytes())
        remote = load_parts(f"memory://{root}")
        local = load_parts(parts[0].parent)
        assert remote.digest == local.digest == source_digest(f"memory://{root}")
        assert remote.features.equals(local.features)
        fs.pipe(f"{root}/part-00001.csv", b"0,1\n1,x\n")
        with pytest.raises(DataError) as raised:
            load_parts(f"memory://{root}")
        assert str(raised.value).startswith(f"memory://{root}/part-00001.csv: ")
        assert "line 2" in str(raised.value)
    finally:
        fs.rm(root, recursive=True)


def test_check_source_gives_what_the_steps_receive(tmp_path: Path, parts: list[Path]) -> None:
    folder = parts[0].parent
    assert check_source(folder) == str(folder.resolve())
    assert check_source(folder / "part-*.parquet") == str(folder / "part-*.parquet")
    assert check_source(parts[0]) == str(parts[0].resolve())
    with pytest.raises(DataError, match="nowhere: no such file"):
        check_source(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"\*\.csv: no part files"):
        check_source(folder / "*.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: no part files"):
        check_source(empty)
