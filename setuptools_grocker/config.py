"""One frozen configuration object, built once per build.

Layers, lowest first: built-in defaults < ``[tool.grocker]`` of ``pyproject.toml`` (or
``grocker.toml`` at the project root, same keys) < ``GROCKER_*`` environment variables <
command-line options. Keys are kebab-case in files; a nested table such as
``[tool.grocker.smoke-test]`` is addressed as ``smoke-test.port``; its environment variable
is ``GROCKER_SMOKE_TEST_PORT``.

Nothing in the library reads ``os.environ``: the frontends (cli.py, command.py) pass their
``environ`` in, to this module and to everything else that reads a variable (caches, pip options,
plugins, ``SOURCE_DATE_EPOCH``, ``NO_COLOR``). Only the scripts in ``resources/``, which run
inside containers, read their own environment. tests/unit/test_hygiene.py checks this.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from setuptools_grocker.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_BASE_IMAGE = "debian:bookworm-slim"
# The pytest script, not `python -m pytest`: -m would put the source tree first on sys.path
# and test it instead of the wheel just built.
DEFAULT_TEST_COMMAND = "pytest -q -p no:cacheprovider"

# The public contract: dotted key -> (kind, default). ``kind`` drives validation of file
# values and parsing of environment values.
KEYS: dict[str, tuple[str, Any]] = {
    "base-image": ("str", DEFAULT_BASE_IMAGE),
    "python": ("str", "python3"),
    "system-packages.run": ("list", ()),
    "system-packages.build": ("list", ()),
    "commands": ("dict", {}),
    "default-command": ("str", None),
    "ports": ("ints", ()),
    "volumes": ("list", ()),
    "env": ("dict", {}),
    "extras": ("list", ()),
    "constraints": ("str", None),
    "local-packages": ("list", ()),
    "smoke-test.command": ("list", ()),
    "smoke-test.port": ("int", None),
    "smoke-test.path": ("str", "/"),
    "smoke-test.timeout": ("float", 60.0),
    "labels": ("dict", {}),
    "image-name": ("str", None),
    "registry": ("str", None),
    "user": ("str", "app"),
    "image": ("bool", None),
    "test-command": ("str", None),
    "test-extras": ("list", None),
    "plugins": ("list", ()),
    "cache-dir": ("str", None),
    "moving-tags": ("list", ()),
}
# Table names, so that ``[tool.grocker.smoke-test]`` is not reported as an unknown key.
TABLES = {"system-packages", "smoke-test", "workspace"}
WORKSPACE_KEYS: dict[str, tuple[str, Any]] = {
    "workspace.members": ("list", ()),
    "workspace.exclude": ("list", ()),
    "workspace.wheelhouse": ("str", None),
    "workspace.index-url": ("str", None),
    "workspace.release-image": ("str", None),
    "workspace.untrusted": ("list", ()),
}

_IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_COMMAND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED_COMMANDS = {"shell", "check", "run", "help"}
# `user` and `python` reach a shell in the root and compiler recipes: a POSIX user name (what
# Debian's useradd accepts, without the trailing '$' of machine accounts), and a program name or
# absolute path made of characters that mean nothing to a shell.
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_PYTHON = re.compile(r"^(?:/[A-Za-z0-9._+-]+)+$|^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# What follows host:port in the smoke-test URL: a path, and nothing that could change the host
# (``@evil.example/x``) or end the request line (spaces, control characters).
_HTTP_PATH = re.compile(r"^/[^\x00-\x20\x7f]*$")


@dataclass(frozen=True)
class SmokeTest:
    """What proves an image works before it gets its tag."""

    command: tuple[str, ...] = ()
    port: int | None = None
    path: str = "/"
    timeout: float = 60.0


@dataclass(frozen=True)
class Config:
    """Everything one build needs, already layered and validated."""

    project_dir: Path
    base_image: str = DEFAULT_BASE_IMAGE
    python: str = "python3"
    run_packages: tuple[str, ...] = ()
    build_packages: tuple[str, ...] = ()
    commands: Mapping[str, str] = field(default_factory=dict)
    default_command: str | None = None
    ports: tuple[int, ...] = ()
    volumes: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    extras: tuple[str, ...] = ()
    constraints: Path | None = None
    local_packages: tuple[Path, ...] = ()
    smoke_test: SmokeTest = SmokeTest()
    labels: Mapping[str, str] = field(default_factory=dict)
    image_name: str | None = None
    registry: str | None = None
    user: str = "app"
    image: bool | None = None
    test_command: str | None = None
    test_extras: tuple[str, ...] | None = None
    plugins: tuple[str, ...] = ()
    cache_dir: Path | None = None
    moving_tags: tuple[str, ...] = ()
    # Per-invocation options (command line only); they do not change what an image contains.
    tag: str | None = None
    no_cache: bool = False
    push: bool = False
    report: Path | None = None
    #: Where the file layer came from, for messages.
    source: str = "defaults"

    @property
    def effective_default_command(self) -> str:
        if self.default_command:
            return self.default_command
        if "server" in self.commands:
            return "server"
        return "help"

    @property
    def state_dir(self) -> Path:
        return self.cache_dir or (self.project_dir / ".grocker")

    def image_inputs(self) -> dict[str, Any]:
        """The part of the configuration that shapes the image (part of every cache key)."""
        return {
            "base-image": self.base_image,
            "python": self.python,
            "run": list(self.run_packages),
            "build": list(self.build_packages),
            "commands": dict(sorted(self.commands.items())),
            "default-command": self.effective_default_command,
            "ports": list(self.ports),
            "volumes": list(self.volumes),
            "env": dict(sorted(self.env.items())),
            "extras": sorted(self.extras),
            "smoke-test": dataclasses.asdict(self.smoke_test),
            "labels": dict(sorted(self.labels.items())),
            "user": self.user,
            # Relative: the same project checked out elsewhere has the same key (and image).
            "local-packages": [os.path.relpath(p, self.project_dir) for p in self.local_packages],
        }


def read_file_layer(project_dir: Path) -> tuple[dict[str, Any], str]:
    """Return the ``[tool.grocker]`` table (possibly empty) and where it came from."""
    grocker_toml = project_dir / "grocker.toml"
    pyproject = project_dir / "pyproject.toml"
    found: list[tuple[dict[str, Any], str]] = []
    for path in (pyproject, grocker_toml):
        if not path.is_file():
            continue
        data = _load_toml(path)
        table = data.get("tool", {}).get("grocker")
        if path == grocker_toml and table is None:
            # grocker.toml may hold the keys at top level or under [tool.grocker].
            table = data
        if table:
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [tool.grocker] must be a table", "write it as [tool.grocker]")
            found.append((table, str(path)))
    if len(found) > 1:
        raise ConfigError(
            f"grocker configuration found in both {found[0][1]} and {found[1][1]}",
            "keep it in one of the two files",
        )
    return found[0] if found else ({}, "defaults")


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", "fix the syntax error at that line") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "check the file permissions") from exc


def flatten(table: Mapping[str, Any], where: str, known: Mapping[str, Any] = KEYS) -> dict[str, Any]:
    """Turn nested tables into dotted keys, rejecting unknown keys with the closest valid one."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if key in TABLES and isinstance(value, dict) and key != "workspace":
            for sub, subvalue in value.items():
                flat[f"{key}.{sub}"] = subvalue
        elif key == "workspace" and isinstance(value, dict):
            for sub in value:
                dotted = f"workspace.{sub}"
                if dotted not in WORKSPACE_KEYS:
                    raise unknown_key(dotted, where, WORKSPACE_KEYS)
        else:
            flat[key] = value
    for key in flat:
        if key not in known:
            raise unknown_key(key, where, known)
    return flat


def unknown_key(key: str, where: str, known: Mapping[str, Any]) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(known))}"
    return ConfigError(f"unknown key '{key}' in {where}", hint)


def _check(key: str, kind: str, value: Any, where: str) -> Any:
    """Validate a value from a file against its kind and normalise it."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(
            f"'{key}' in {where} must be {expected}, not {type(value).__name__} {value!r}",
            f"write it as {key} = {_example(kind)}",
        )

    if value is None:
        return None
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if kind == "list":
        if isinstance(value, str):
            return tuple(value.split()) if key.startswith("smoke-test.command") else (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if kind == "ints":
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad("a list of integers")
        return tuple(value)
    if kind == "dict":
        if not isinstance(value, dict) or not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
            raise bad("a table of strings")
        return {str(k): _scalar_str(v) for k, v in value.items()}
    raise AssertionError(kind)


def _scalar_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _example(kind: str) -> str:
    return {
        "str": '"text"',
        "bool": "true",
        "int": "8000",
        "float": "30",
        "list": '["a", "b"]',
        "ints": "[8000]",
        "dict": '{ NAME = "value" }',
    }[kind]


def env_var(key: str) -> str:
    return "GROCKER_" + key.upper().replace("-", "_").replace(".", "_")


def _parse_env(key: str, kind: str, raw: str) -> Any:
    name = env_var(key)
    try:
        if kind in ("str",):
            return raw
        if kind == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "list":
            return tuple(p for p in re.split(r"[,\s]+", raw.strip()) if p)
        if kind == "ints":
            return tuple(int(p) for p in re.split(r"[,\s]+", raw.strip()) if p)
        if kind == "dict":
            if raw.strip().startswith("{"):
                loaded = json.loads(raw)
                return {str(k): _scalar_str(v) for k, v in loaded.items()}
            pairs = [p for p in re.split(r"[,\n]", raw) if p.strip()]
            return dict(_split_pair(p) for p in pairs)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not a valid {kind}",
            f"set it like {name}={_env_example(kind)}",
        ) from exc
    raise AssertionError(kind)


def _split_pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(text)
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def _env_example(kind: str) -> str:
    return {"bool": "1", "int": "8000", "float": "30", "list": "a,b", "ints": "8000,8001",
            "dict": "NAME=value,OTHER=x", "str": "text"}[kind]


def env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Parse ``GROCKER_*`` configuration variables; return them and warnings for unknown ones."""
    by_var = {env_var(k): k for k in KEYS}
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for name, raw in environ.items():
        if not name.startswith("GROCKER_") or name in NON_CONFIG_ENV:
            continue
        key = by_var.get(name)
        if key is None:
            close = difflib.get_close_matches(name, list(by_var) + list(NON_CONFIG_ENV), n=1, cutoff=0.6)
            warnings.append(
                f"ignoring unknown environment variable {name}"
                + (f" (did you mean {close[0]}?)" if close else "")
            )
            continue
        values[key] = _parse_env(key, KEYS[key][0], raw)
    return values, warnings


# GROCKER_* variables that are not configuration keys.
NON_CONFIG_ENV = {
    "GROCKER_TRACE_PLUGINS",
    "GROCKER_DISABLE_PLUGINS",
    "GROCKER_CACHE_HOME",
    "GROCKER_NO_PIP_CONFIG",
    "GROCKER_SOURCE_DATE_EPOCH",
    # workspace.index-url, read by the workspace build: the only place its credentials may be.
    "GROCKER_WORKSPACE_INDEX_URL",
}


def load_config(
    project_dir: Path,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    file_table: Mapping[str, Any] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Config:
    """Build the :class:`Config` of one project from its four layers.

    ``overrides`` holds command-line values by dotted key (``"base-image"``) or by the
    per-invocation names ``tag``, ``no-cache``, ``push``, ``report``.
    """
    project_dir = project_dir.resolve()
    if file_table is None:
        table, source = read_file_layer(project_dir)
    else:
        table, source = dict(file_table), f"{project_dir}"
    flat = flatten({k: v for k, v in table.items() if k != "workspace"}, source)
    values: dict[str, Any] = {key: default for key, (kind, default) in KEYS.items()}
    for key, value in flat.items():
        values[key] = _check(key, KEYS[key][0], value, source)
    env_values, warnings = env_layer(environ or {})
    values.update(env_values)
    for message in warnings:
        if warn:
            warn(message)
    invocation = {"tag": None, "no-cache": False, "push": False, "report": None}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in invocation:
            invocation[key] = value
        elif key in KEYS:
            values[key] = value
        else:  # a frontend bug, not user input
            raise AssertionError(f"unknown override {key}")
    return _build(project_dir, values, invocation, source)


def _build(project_dir: Path, v: dict[str, Any], inv: dict[str, Any], source: str) -> Config:
    commands = dict(v["commands"])
    for name, line in commands.items():
        if not _COMMAND_NAME.match(name):
            raise ConfigError(f"command name {name!r} in {source} is not valid",
                              "use letters, digits, '-', '_' or '.'")
        if name in RESERVED_COMMANDS:
            raise ConfigError(f"command name '{name}' in {source} is built into the entrypoint",
                              "choose another name")
        if not line.strip():
            raise ConfigError(f"command '{name}' in {source} is empty", "give it a command line")
    default = v["default-command"]
    image_name = v["image-name"]
    if image_name is not None and not _IMAGE_NAME.match(image_name):
        raise ConfigError(f"image-name {image_name!r} is not a valid image name",
                          "use lowercase letters, digits, '.', '_', '-' and '/'")
    tag = inv["tag"]
    if tag is not None:
        validate_reference(tag)
    for port in list(v["ports"]) + ([v["smoke-test.port"]] if v["smoke-test.port"] is not None else []):
        if not 0 < port < 65536:
            raise ConfigError(f"port {port} is out of range", "use a port between 1 and 65535")
    for pkg in list(v["system-packages.run"]) + list(v["system-packages.build"]):
        if not re.match(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?$", pkg):
            raise ConfigError(f"system package {pkg!r} is not a valid Debian package name",
                              "use names as apt-get takes them, e.g. libpq5")
    for moving in v["moving-tags"]:
        if not _TAG.match(moving.replace("{date}", "20260101")):
            raise ConfigError(f"moving tag {moving!r} is not a valid tag",
                              "use letters, digits, '_', '.', '-' and {date}, e.g. nightly-{date}")
    path = v["smoke-test.path"]
    check_http_path(path)
    user = v["user"]
    if not _USER.match(user):
        raise ConfigError(f"user {user!r} is not a valid user name",
                          "use lowercase letters, digits, '_' and '-', starting with a letter or '_' (at most 32)")
    python = v["python"]
    if not _PYTHON.match(python):
        raise ConfigError(f"python {python!r} is not a program name or an absolute path",
                          "write e.g. python3, python3.11 or /usr/bin/python3 (letters, digits, '.', '_', '+', '-')")

    def rel(p: str | None) -> Path | None:
        return None if p is None else (project_dir / p).resolve()

    return Config(
        project_dir=project_dir,
        base_image=v["base-image"],
        python=python,
        run_packages=tuple(v["system-packages.run"]),
        build_packages=tuple(v["system-packages.build"]),
        commands=commands,
        default_command=default,
        ports=tuple(v["ports"]),
        volumes=tuple(v["volumes"]),
        env=dict(v["env"]),
        extras=tuple(v["extras"]),
        constraints=rel(v["constraints"]),
        local_packages=tuple((project_dir / p).resolve() for p in v["local-packages"]),
        smoke_test=SmokeTest(
            command=tuple(v["smoke-test.command"]),
            port=v["smoke-test.port"],
            path=path,
            timeout=float(v["smoke-test.timeout"]),
        ),
        labels=dict(v["labels"]),
        image_name=image_name,
        registry=v["registry"],
        user=user,
        image=v["image"],
        test_command=v["test-command"],
        test_extras=tuple(v["test-extras"]) if v["test-extras"] is not None else None,
        plugins=tuple(v["plugins"]),
        cache_dir=rel(v["cache-dir"]),
        moving_tags=tuple(v["moving-tags"]),
        tag=tag,
        no_cache=bool(inv["no-cache"]),
        push=bool(inv["push"]),
        report=Path(inv["report"]).resolve() if inv["report"] else None,
        source=source,
    )


def check_default_command(config: Config) -> None:
    """default-command must name a command; checked once plugins have added theirs."""
    default = config.default_command
    if default and default not in config.commands and default not in RESERVED_COMMANDS:
        close = difflib.get_close_matches(default, list(config.commands) + sorted(RESERVED_COMMANDS), n=1)
        raise ConfigError(
            f"default-command '{default}' is not one of the configured commands",
            f"did you mean '{close[0]}'?" if close else "add it under [tool.grocker.commands]",
        )


def check_http_path(path: str, where: str = "smoke-test.path") -> None:
    """A path probed on 127.0.0.1 must be a path: a leading '/', no spaces or control characters."""
    if not path.startswith("/"):
        raise ConfigError(f"{where} {path!r} must start with '/'", f"write '/{path}'")
    if not _HTTP_PATH.match(path):
        raise ConfigError(f"{where} {path!r} contains spaces or control characters",
                          "percent-encode them (%20)")


def validate_reference(ref: str) -> None:
    """Check an image reference ``[registry/]name[:tag]``; raise ConfigError when invalid."""
    name, tag = split_reference(ref)
    bare = name.split("/", 1)[1] if "/" in name and _looks_like_registry(name.split("/", 1)[0]) else name
    if not _IMAGE_NAME.match(bare) or (tag is not None and not _TAG.match(tag)):
        raise ConfigError(
            f"image reference {ref!r} is not valid",
            "use NAME:TAG with a lowercase name and a tag of letters, digits, '_', '.', '-'",
        )


def split_reference(ref: str) -> tuple[str, str | None]:
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
        return name, tag
    return ref, None


def _looks_like_registry(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"
