"""fs.atomic_writer / write_atomic: a file is complete under its name or not there, whoever races."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from setuptools_grocker.fs import atomic_writer, write_atomic
from setuptools_grocker.report import write_json_atomic

SIZE = 256 * 1024


def test_concurrent_writers_and_readers_see_only_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    payloads = [bytes([65 + n]) * SIZE for n in range(6)]
    write_atomic(target, payloads[0])
    seen: set[bytes] = set()
    torn: list[int] = []
    stop = threading.Event()

    def writer(payload: bytes) -> None:
        for _ in range(25):
            write_atomic(target, payload)

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            if data not in payloads:
                torn.append(len(data))
            seen.add(data[:1])

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert torn == []
    assert target.read_bytes() in payloads
    assert len(seen) > 1  # the reader did overlap the writers
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "blob.tar.gz"
    write_atomic(target, b"old")
    with pytest.raises(ValueError, match="hash mismatch"):
        with atomic_writer(target) as fh:
            fh.write(b"half of the new")
            raise ValueError("hash mismatch")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["blob.tar.gz"]


def test_a_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with atomic_writer(tmp_path / "wheel.whl") as fh:
            fh.write(b"PK")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_text_is_utf8_and_json_keeps_its_layout(tmp_path: Path) -> None:
    write_atomic(tmp_path / "v.txt", "1.0+café")
    assert (tmp_path / "v.txt").read_bytes() == "1.0+café".encode()
    write_json_atomic(tmp_path / "deep" / "r.json", {"b": 1, "a": [1]})
    assert (tmp_path / "deep" / "r.json").read_text() == json.dumps({"b": 1, "a": [1]}, indent=2) + "\n"
