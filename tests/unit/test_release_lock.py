"""The release lock with real files and real processes (no registry, no engine)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from setuptools_grocker.cli import main
from setuptools_grocker.errors import ReleaseConflict, ReleaseIncomplete
from setuptools_grocker.registry.release import lagging_error, release_lock

HOLDER = """
import sys, time
from pathlib import Path
from setuptools_grocker.registry.release import release_lock
with release_lock(Path(sys.argv[1]), info=lambda line: print(line, flush=True)):
    print("held", time.monotonic(), flush=True)
    time.sleep(float(sys.argv[2]))
    print("released", time.monotonic(), flush=True)
"""


@contextmanager
def hold(lock: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock (it has it when the block starts); ended, and reaped, after it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("held"), "the holder did not get the lock"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_a_second_release_waits_for_the_first(tmp_path: Path) -> None:
    lock = tmp_path / ".grocker" / "release.lock"
    lines: list[str] = []
    with hold(lock, 1.5) as first:
        with release_lock(lock, info=lines.append):
            got_it = time.monotonic()
        assert first.stdout is not None
        released = float(first.stdout.readline().split()[1])
    assert got_it >= released
    assert lines == [f"waiting for another release of this workspace (pid {first.pid}) to finish ({lock})"]


def test_a_killed_holder_drops_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "release.lock"
    with hold(lock, 600) as holder:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        start = time.monotonic()
        with release_lock(lock, wait=5):
            assert time.monotonic() - start < 1
            assert lock.read_text() == f"{os.getpid()}\n"


def test_waiting_too_long_is_a_clear_conflict(tmp_path: Path) -> None:
    lock = tmp_path / "release.lock"
    with hold(lock, 30) as holder:
        with pytest.raises(ReleaseConflict) as info:
            with release_lock(lock, wait=0.5):
                pytest.fail("got a lock another process holds")
    assert f"another release of this workspace (pid {holder.pid}) has held {lock}" in info.value.message
    assert info.value.exit_code == 17


def test_the_lock_is_not_reentrant_across_descriptors(tmp_path: Path) -> None:
    """Two releases inside one process (two threads, a library caller) exclude each other too."""
    lock = tmp_path / "release.lock"
    with release_lock(lock):
        with pytest.raises(ReleaseConflict):
            with release_lock(lock, wait=0.3):
                pytest.fail("flock taken twice")


def test_the_pointer_tag_cannot_name_a_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["workspace", "release", str(tmp_path), "--release", "latest"],
                 ["workspace", "build", str(tmp_path), "--push", "--release", "latest"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "'latest' cannot name a release: it is the tag of the release pointer" in capsys.readouterr().err


def test_lagging_tags_make_one_line_naming_them() -> None:
    document = {"release": "r1", "document": {"pointer": "127.0.0.1:5000/shop-release:latest"},
                "lagging": [{"tag": "127.0.0.1:5000/web:2.0.0", "error": "registry answered HTTP 503"},
                            {"tag": "127.0.0.1:5000/web:r1", "error": "registry answered HTTP 503"}]}
    error = lagging_error(document)
    assert isinstance(error, ReleaseIncomplete) and error.exit_code == 18
    assert error.one_line() == ("release r1 is published (127.0.0.1:5000/shop-release:latest names it) but 2 "
                                "convenience tag(s) lag: 127.0.0.1:5000/web:2.0.0, 127.0.0.1:5000/web:r1; "
                                "run the release again to move them (it is idempotent)")
    assert lagging_error({**document, "lagging": []}) is None


def test_a_release_name_follows_the_digests_and_the_attached_documents() -> None:
    """Two machines pushing the same image attach their own provenance: the releases naming one or the other
    get different automatic names (a release document never changes), the same documents the same name."""
    from setuptools_grocker.registry.release import AppRelease, release_id

    def app(att: str) -> AppRelease:
        return AppRelease("shop", "1.0", "reg:5000/shop:kabc", "sha256:" + "1" * 64,
                          documents={"sbom": "reg:5000/shop@sha256:" + "2" * 64, "provenance": att})

    a, b = "reg:5000/shop@sha256:" + "3" * 64, "reg:5000/shop@sha256:" + "4" * 64
    assert release_id([app(a)]) == release_id([app(a)])
    assert release_id([app(a)]) != release_id([app(b)])
    assert release_id([app(a)]).split("-")[0].isdigit()  # the date first
