"""Progress output: named stages with durations, echoed engine commands, warnings.

The library writes through a :class:`Progress` object; frontends choose the stream. Colour
is used only on a terminal and never when ``NO_COLOR`` is set.
"""
from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from typing import IO, Iterator

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SECRET_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s:]+(:[^/@\s]*)?@", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide credentials embedded in URLs (``https://user:token@host``)."""
    return _SECRET_URL.sub(lambda m: f"{m.group('scheme')}***@", text)


class Progress:
    """Writes human-readable progress; thread-safe so parallel builds can share one."""

    def __init__(self, stream: IO[str] | None = None, color: bool | None = None, prefix: str = "",
                 quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if color is None:
            import os

            color = bool(getattr(self.stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ
        self.color = color
        self.prefix = prefix
        self.quiet = quiet
        #: Hide engine commands and container output (parallel builds); failures still show details.
        self.quiet_output = False
        self.timings: list[tuple[str, float]] = []
        self._lock = threading.Lock()

    def child(self, prefix: str) -> Progress:
        """A Progress that prefixes every line (one per workspace member)."""
        sub = Progress(self.stream, self.color, prefix=f"{self.prefix}{prefix} ", quiet=self.quiet)
        sub._lock = self._lock
        return sub

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def write(self, line: str) -> None:
        with self._lock:
            self.stream.write(f"{self.prefix}{redact(line)}\n")
            self.stream.flush()

    def info(self, message: str) -> None:
        if not self.quiet:
            self.write(message)

    def warn(self, message: str) -> None:
        self.write(self._paint("warning: ", "33") + message)

    def command(self, argv: list[str] | str) -> None:
        """Echo an external command as ``+ docker ...`` (credentials redacted)."""
        text = argv if isinstance(argv, str) else " ".join(_quote(a) for a in argv)
        if not self.quiet and not self.quiet_output:
            self.write(self._paint(f"+ {text}", "2"))

    def output(self, line: str) -> None:
        if not self.quiet and not self.quiet_output:
            self.write("  " + _ANSI.sub("", line).rstrip())

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Announce a stage, time it, and record the duration."""
        self.info(self._paint(f"==> {name}", "1;34"))
        start = time.monotonic()
        try:
            yield
        except BaseException:
            elapsed = time.monotonic() - start
            self.timings.append((name, elapsed))
            self.info(self._paint(f"<== {name} failed after {elapsed:.1f}s", "1;31"))
            raise
        elapsed = time.monotonic() - start
        self.timings.append((name, elapsed))
        self.info(self._paint(f"<== {name} {elapsed:.1f}s", "1;32"))


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
