"""Progress output: named stages with durations, echoed engine commands, warnings.

The library writes through a :class:`Progress` object; frontends choose the stream and pass
their environment. Colour is used only on a terminal, only when a frontend passed ``environ``,
and never when ``NO_COLOR`` is set in it.
"""
from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from typing import IO, Iterator, Mapping

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The userinfo of a URL, whatever it holds (``user:token@``, ``:token@``, ``token@``).
_SECRET_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/?#\s]*@", re.IGNORECASE)
# Query parameters that carry credentials (?private_token=, &access_token=, ?X-Amz-Signature=, ?api_key=...).
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;][a-z0-9_.-]*(?:token|secret|passw(?:or)?d|pwd|api[_-]?key|access[_-]?key|signature|"
    r"credential|auth)[a-z0-9_.-]*=)[^&#\s'\"]+", re.IGNORECASE)
# ``Authorization: Bearer <token>`` / ``Basic <b64>`` and bare ``Bearer <token>``.
_SECRET_HEADER = re.compile(r"(?P<name>\b(?:Proxy-)?Authorization\s*[:=]\s*(?:[A-Za-z]+\s+)?)[^\s'\",]+",
                            re.IGNORECASE)
_BEARER = re.compile(r"(?P<name>\bBearer\s+)(?!realm=)[A-Za-z0-9._~+/=-]{8,}")
# Values that must never be printed, whatever their shape: plugin compile environment values,
# forwarded pip index URLs, index credentials. Shorter ones would mask ordinary words.
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
MIN_SECRET = 8


def add_secret(value: str) -> None:
    """Never print ``value`` (8 characters or more) again in this process."""
    if len(value) >= MIN_SECRET:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    """Hide credentials: URL userinfo, token query parameters, Authorization values, registered secrets."""
    with _SECRETS_LOCK:
        known = sorted(_SECRETS, key=len, reverse=True)
    for value in known:
        text = text.replace(value, "***")
    text = _SECRET_URL.sub(lambda m: f"{m.group('scheme')}***@", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m.group('name')}***", text)
    text = _SECRET_HEADER.sub(lambda m: f"{m.group('name')}***", text)
    return _BEARER.sub(lambda m: f"{m.group('name')}***", text)


class Progress:
    """Writes human-readable progress; thread-safe so parallel builds can share one."""

    def __init__(self, stream: IO[str] | None = None, color: bool | None = None, prefix: str = "",
                 quiet: bool = False, environ: Mapping[str, str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if color is None:
            color = (environ is not None and "NO_COLOR" not in environ
                     and bool(getattr(self.stream, "isatty", lambda: False)()))
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
