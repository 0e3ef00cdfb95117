"""Files that appear complete under their final name or not at all.

Threads of one build, builds of one cache root and machines that stop at any moment share the
files grocker keeps (state, reports, the blob cache, downloaded wheels). Each writer writes a
temporary file of its own in the same directory (``mkstemp``: never a name shared by two
writers, and the same filesystem, so the rename is atomic), fsyncs it, renames it over the final
name with ``os.replace`` and fsyncs the directory. A reader sees the old file or the new one,
never a mix; a writer that fails leaves no temporary file behind. The last writer wins.

Publishing a whole directory (a staging directory renamed into place) is a different thing and
lives with the code that does it. This module imports nothing of the pipeline.
"""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

#: When this grocker process started. ``--no-cache`` (a clean build) ignores what earlier runs left in the caches
#: but not what this run made itself (a build environment, bytecode): a clean build of a workspace prepares
#: each once, not once per member.
PROCESS_STARTED = time.time()


def made_by_this_run(path: Path) -> bool:
    """Whether ``path`` was written since this process started."""
    try:
        return path.stat().st_mtime >= PROCESS_STARTED
    except OSError:
        return False


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write; it becomes ``path`` when the block ends without an exception.

    An exception in the block (a failed check of what was written, a full disk, Ctrl-C) removes
    the temporary file and leaves ``path`` as it was.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path``: complete under that name, or not there."""
    with atomic_writer(path) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a crash right after it must not bring the old name back)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the data itself is synced
        pass
    finally:
        os.close(fd)
