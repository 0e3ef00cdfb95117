"""Progress output: named stages with durations, a heartbeat on long ones, and a full log file.

The library writes through a :class:`Progress` object; frontends choose the stream, the level and
the log file, and pass their environment. Three levels:

- ``QUIET`` (``-q``): warnings, errors and the final result only;
- ``NORMAL`` (the default): one line per stage (its name, result and seconds) and a heartbeat on long
  stages: on a terminal, one status line rewritten in place that fits the terminal's width; elsewhere
  (CI logs, pipes) a plain ``still compiling (60 s)`` line every :data:`HEARTBEAT` seconds. Engine
  commands and container output (pip, apt, ``docker run``) go to the log file only;
- ``VERBOSE`` (``-v``): everything streamed as it comes, stage by stage.

Whatever the level, every line (commands and container output included) goes to the log file when a
frontend opened one (:meth:`Progress.open_log`): ``<state dir>/logs/<time>-<pid>.log``, the newest
:data:`KEEP_LOGS` kept, credentials redacted like every printed line. Colour is used only on a terminal,
only when a frontend passed ``environ``, and never when ``NO_COLOR`` is set in it.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Mapping

__all__ = ["HEARTBEAT", "KEEP_LOGS", "NORMAL", "QUIET", "VERBOSE", "Progress", "add_secret", "redact",
           "rotate_logs"]

QUIET, NORMAL, VERBOSE = 0, 1, 2
#: Seconds between two plain heartbeat lines of a running stage (not a terminal).
HEARTBEAT = 30.0
#: Seconds between two redraws of the status line (a terminal).
REDRAW = 1.0
#: Log files kept in ``<state dir>/logs`` (the newest).
KEEP_LOGS = 20

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
_TOKENS = itertools.count()
# What the heartbeat says a stage is doing ("still compiling (60 s)"); other stages: "still in NAME".
_DOING = {"compile": "compiling", "image": "assembling the image", "smoke test": "smoke-testing",
          "push": "pushing", "scan": "scanning", "test": "testing", "wheel": "building the wheel",
          "wheel + test": "building and testing", "upload": "uploading", "deploy": "deploying"}


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


def rotate_logs(directory: Path, keep: int = KEEP_LOGS) -> list[Path]:
    """Remove all but the newest ``keep`` logs (``*.log``, named by time) of ``directory``; the removed ones."""
    logs = sorted(directory.glob("*.log"), key=lambda p: p.name)
    removed = logs[:-keep] if keep > 0 else logs
    for path in removed:
        with contextlib.suppress(OSError):  # another run removed it first
            path.unlink()
    return removed


def _doing(name: str) -> str:
    return _DOING.get(name.split(" [")[0], f"in {name}")


@dataclass
class _Running:
    """A stage that runs: its name, the prefix of its Progress, when it started, its last heartbeat."""

    name: str
    prefix: str
    start: float
    beat: float


class _Sink:
    """What the Progress objects of one run share: the stream, the log file, the running stages, one lock."""

    def __init__(self, stream: IO[str], clock: Callable[[], float], tty: bool) -> None:
        self.stream = stream
        self.clock = clock
        self.tty = tty
        self.lock = threading.RLock()
        self.log: IO[str] | None = None
        self.log_path: Path | None = None
        #: Running stages by a token; the status line shows them.
        self.running: dict[int, _Running] = {}
        self.last_output = ""
        self.status_shown = False
        self.ticker: threading.Thread | None = None
        self.stop = threading.Event()


class Progress:
    """Writes human-readable progress at a level; thread-safe so parallel builds can share one."""

    def __init__(self, stream: IO[str] | None = None, color: bool | None = None, prefix: str = "",
                 quiet: bool = False, environ: Mapping[str, str] | None = None, *, level: int | None = None,
                 clock: Callable[[], float] = time.monotonic, tty: bool | None = None,
                 ticker: bool = True) -> None:
        stream = stream if stream is not None else sys.stderr
        is_tty = bool(getattr(stream, "isatty", lambda: False)())
        if color is None:
            color = environ is not None and "NO_COLOR" not in environ and is_tty
        self.color = color
        self.prefix = prefix
        self.level = level if level is not None else (QUIET if quiet else NORMAL)
        # The status line is drawn for a frontend's terminal only (it passes environ), never for TERM=dumb.
        tty = tty if tty is not None else (is_tty and environ is not None and environ.get("TERM") != "dumb")
        self._sink = _Sink(stream, clock, tty)
        self._ticker = ticker
        #: Hide engine commands and container output (parallel builds); failures still show details.
        self.quiet_output = False
        self.timings: list[tuple[str, float]] = []

    # -- set-up ---------------------------------------------------------------------------------------

    @property
    def quiet(self) -> bool:
        return self.level <= QUIET

    @property
    def verbose(self) -> bool:
        return self.level >= VERBOSE

    @property
    def stream(self) -> IO[str]:
        return self._sink.stream

    @property
    def log_path(self) -> Path | None:
        """The full log of this run, once a frontend opened one."""
        return self._sink.log_path

    def child(self, prefix: str) -> Progress:
        """A Progress that prefixes every line (one per workspace member), sharing stream, log and lock."""
        sub = Progress(self.stream, self.color, prefix=f"{self.prefix}{prefix} ", level=self.level,
                       ticker=self._ticker)
        sub._sink = self._sink
        return sub

    def open_log(self, directory: Path, keep: int = KEEP_LOGS) -> Path:
        """Log every line of this run to a new file in ``directory``; keep its newest ``keep`` logs."""
        sink = self._sink
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = directory / f"{stamp}-{os.getpid()}.log"
        # The log holds what pip and the build printed: readable by its owner only, like the state.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with sink.lock:
            if sink.log is not None:
                sink.log.close()
            sink.log = os.fdopen(fd, "w", encoding="utf-8", errors="replace")
            sink.log_path = path
        rotate_logs(directory, keep)
        return path

    def close(self) -> None:
        """Stop the heartbeat, clear the status line and close the log file."""
        sink = self._sink
        sink.stop.set()
        with sink.lock:
            self._clear_status()
            if sink.log is not None:
                sink.log.close()
                sink.log = None

    def see(self, what: str) -> str:
        """Where the user finds ``what`` ("pip's output"): above when streamed, else in the log file."""
        if self.verbose and not self.quiet_output:
            return f"see {what} above"
        if self.log_path is not None:
            return f"see {what} in {self.log_path}"
        return f"see {what} (run again with -v to show it)"

    # -- lines ----------------------------------------------------------------------------------------

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def _log(self, line: str) -> None:
        log = self._sink.log
        if log is not None:
            log.write(f"{time.strftime('%H:%M:%S')} {self.prefix}{redact(_ANSI.sub('', line))}\n")
            log.flush()

    def _print(self, line: str) -> None:
        """Print one line above the status line (the caller holds the lock)."""
        sink = self._sink
        self._clear_status()
        sink.stream.write(f"{self.prefix}{redact(line)}\n")
        sink.stream.flush()
        self._draw_status()

    def write(self, line: str) -> None:
        """A line every level shows (results, summaries); also logged."""
        with self._sink.lock:
            self._log(line)
            self._print(line)

    def info(self, message: str) -> None:
        with self._sink.lock:
            self._log(message)
            if not self.quiet:
                self._print(message)

    def detail(self, message: str) -> None:
        """A line for ``-v`` and the log only (what a stage found, step by step)."""
        with self._sink.lock:
            self._log(message)
            if self.verbose:
                self._print(message)

    def warn(self, message: str) -> None:
        self.write(self._paint("warning: ", "33") + message)

    def command(self, argv: list[str] | str) -> None:
        """Echo an external command as ``+ docker ...`` (credentials redacted): streamed with ``-v``, logged."""
        text = argv if isinstance(argv, str) else " ".join(_quote(a) for a in argv)
        with self._sink.lock:
            self._log(f"+ {text}")
            if self.verbose and not self.quiet_output:
                self._print(self._paint(f"+ {text}", "2"))

    def output(self, line: str) -> None:
        """A line of a container's output: streamed with ``-v``, logged, the last one shown on the status line."""
        text = _ANSI.sub("", line).rstrip()
        sink = self._sink
        with sink.lock:
            self._log("  " + text)
            if self.verbose and not self.quiet_output:
                self._print("  " + text)
            elif text.strip():
                sink.last_output = f"{self.prefix}{text.strip()}"
        self.tick()

    # -- stages and the heartbeat ---------------------------------------------------------------------

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run a stage: time it, record its duration, and say how it ended (with ``-v``, also when it starts)."""
        sink = self._sink
        start = sink.clock()
        token = next(_TOKENS)
        with sink.lock:
            self._log(f"==> {name}")
            if self.verbose:
                self._print(self._paint(f"==> {name}", "1;34"))
            sink.running[token] = _Running(name, self.prefix, start, start)
            sink.last_output = ""
            self._draw_status()
        self._start_ticker()
        try:
            yield
        except BaseException:
            elapsed = sink.clock() - start
            self.timings.append((name, elapsed))
            self._end(token, self._paint(f"{'<== ' if self.verbose else ''}{name} failed after {elapsed:.1f}s",
                                         "1;31"))
            raise
        elapsed = sink.clock() - start
        self.timings.append((name, elapsed))
        done = f"<== {name} {elapsed:.1f}s" if self.verbose else f"{name:<12} ok  {elapsed:5.1f}s"
        self._end(token, self._paint(done, "1;32"))

    def _end(self, token: int, line: str) -> None:
        with self._sink.lock:
            self._sink.running.pop(token, None)
            self._log(_ANSI.sub("", line))
            if not self.quiet:
                self._print(line)

    def tick(self) -> None:
        """Redraw the status line (terminal), or print the heartbeat of stages running for a while (plain)."""
        sink = self._sink
        if self.quiet or self.verbose:
            return
        with sink.lock:
            if sink.tty:
                self._draw_status()
                return
            now = sink.clock()
            for stage in sink.running.values():
                if now - stage.beat >= HEARTBEAT:
                    stage.beat = now
                    sink.stream.write(f"{stage.prefix}still {_doing(stage.name)} ({now - stage.start:.0f} s)\n")
                    sink.stream.flush()

    def _start_ticker(self) -> None:
        sink = self._sink
        if not self._ticker or self.quiet or self.verbose:
            return
        with sink.lock:
            if sink.ticker is not None:
                return
            sink.ticker = threading.Thread(target=self._tick_loop, name="grocker-progress", daemon=True)
            sink.ticker.start()

    def _tick_loop(self) -> None:
        sink = self._sink
        while not sink.stop.wait(REDRAW):
            self.tick()

    def _status_text(self) -> str:
        sink = self._sink
        now = sink.clock()
        parts = [f"{s.prefix}{s.name} {now - s.start:.0f}s" for s in sink.running.values()]
        text = " · ".join(parts)
        if sink.last_output:
            text += f" · {sink.last_output}"
        width = shutil.get_terminal_size((80, 24)).columns - 1
        return text if len(text) <= width else text[:max(width - 1, 0)] + "…"

    def _draw_status(self) -> None:
        sink = self._sink
        if not sink.tty or self.quiet or self.verbose or not sink.running:
            return
        sink.stream.write("\r\033[K" + redact(self._status_text()))
        sink.stream.flush()
        sink.status_shown = True

    def _clear_status(self) -> None:
        sink = self._sink
        if sink.status_shown:
            sink.stream.write("\r\033[K")
            sink.status_shown = False


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
