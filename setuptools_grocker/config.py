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

import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from setuptools_grocker.errors import ConfigError
from setuptools_grocker.keys import (
    DEFAULT_BASE_IMAGE,
    DEFAULT_TEST_COMMAND,
    KEYS,
    RESERVED_COMMANDS,
    RETIRED,
    TABLES,
    WORKSPACE_KEYS,
    Key,
    WrongType,
    check_http_path,
    env_var,
)
from setuptools_grocker.ref import parse_reference

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DEFAULT_BASE_IMAGE", "DEFAULT_TEST_COMMAND", "KEYS", "TABLES", "WORKSPACE_KEYS", "Canary", "Config", "RunOptions",
    "SmokeTest", "Watch", "check_default_command", "check_http_path", "env_var", "load_config", "validate_reference",
]


@dataclass(frozen=True)
class SmokeTest:
    """What proves an image works before it gets its tag."""

    command: tuple[str, ...] = ()
    port: int | None = None
    path: str = "/"
    timeout: float = 60.0
    #: The server's network mode: ``none``, or a Docker network for a server that needs one to start.
    network: str = "none"


@dataclass(frozen=True)
class Canary:
    """How ``grocker ship`` grows a canary's share of production's traffic and judges it (keys ``canary.*``)."""

    steps: tuple[int, ...] = (5, 25, 50, 100)
    window: float = 60.0
    min_requests: int = 50
    max_inconclusive: int = 3
    alpha: float = 0.01
    latency_margin_ms: float = 25.0


@dataclass(frozen=True)
class Watch:
    """How production is compared with its baseline after a promotion and by ``grocker watch`` (``watch.*``)."""

    bake: float = 600.0
    window: float = 60.0
    baseline: float = 600.0
    min_requests: int = 50
    alpha: float = 0.001
    latency_margin_ms: float = 50.0
    fail_windows: int = 2


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
    #: Where the application's lock is, or would be written, when not ``pylock.toml`` (see ``lock_file``).
    lock: Path | None = None
    installer: str = "uv"
    index_strategy: str = "first-index"
    local_packages: tuple[Path, ...] = ()
    build_commands: tuple[str, ...] = ()
    smoke_test: SmokeTest = SmokeTest()
    labels: Mapping[str, str] = field(default_factory=dict)
    image_name: str | None = None
    registry: str | None = None
    build_cache: str | None = None
    user: str = "app"
    image: bool | None = None
    test_command: str | None = None
    test_extras: tuple[str, ...] | None = None
    plugins: tuple[str, ...] = ()
    cache_dir: Path | None = None
    moving_tags: tuple[str, ...] = ()
    functional_tests: str | None = None
    functional_tests_image: str | None = None
    canary: Canary = Canary()
    pre_deploy: str | None = None
    #: ``grocker ship``'s companion services: suffix -> {"command", "replicas", "env"} (keys.py checks them).
    services: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    services_watch: float = 60.0
    watch: Watch = Watch()
    irreversible: bool = False
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
    def lock_file(self) -> Path:
        """The application's lock (``grocker lock`` writes it; a build uses it when it exists)."""
        return self.lock or self.project_dir / "pylock.toml"

    @property
    def state_dir(self) -> Path:
        return self.cache_dir or (self.project_dir / ".grocker")

    def image_inputs(self) -> dict[str, Any]:
        """The part of the configuration that shapes the image (part of every cache key).

        Derived from the keys marked ``image_input`` (keys.py); a dotted input name nests
        (``smoke-test.port`` -> ``{"smoke-test": {"port": ...}}``); a key marked ``input_when_set``
        is left out while it is empty, so that adding it changed no existing cache key.
        """
        inputs: dict[str, Any] = {}
        for key in KEYS.values():
            if key.image_input and (key.input_value(self) or not key.input_when_set):
                *tables, last = (key.input_name or key.name).split(".")
                where = inputs
                for table in tables:
                    where = where.setdefault(table, {})
                where[last.replace("-", "_") if tables else last] = key.input_value(self)
        return inputs


@dataclass(frozen=True)
class RunOptions:
    """What one invocation does with the image: never what the image contains (no cache key sees it).

    Built by the frontends (``grocker build``, ``setup.py docker_image``) beside the :class:`Config`.
    """

    #: Final image reference NAME:TAG (default: IMAGE-NAME:VERSION).
    tag: str | None = None
    #: Rebuild even when the cache key is unchanged.
    no_cache: bool = False
    #: Push the image (and its tags) to the registry.
    push: bool = False
    #: Resolve the dependency closure again even when the project's metadata did not change.
    upgrade: bool = False
    #: Push the root and compiler images this run builds to the shared cache (``build-cache``).
    cache_write: bool = False
    #: Where the JSON report goes: a file, ``-`` for stdout, None for nowhere.
    report: str | None = None

    def validate(self) -> None:
        """Raise ConfigError for a bad ``--tag`` (checked after the configuration, as before)."""
        if self.tag is not None:
            validate_reference(self.tag)


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


def flatten(table: Mapping[str, Any], where: str, known: Mapping[str, Key] = KEYS) -> dict[str, Any]:
    """Turn nested tables into dotted keys, rejecting unknown keys with the closest valid one."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if key in TABLES and isinstance(value, dict) and key != "workspace":
            for sub, subvalue in value.items():
                flat[f"{key}.{sub}"] = subvalue
        elif key == "workspace" and isinstance(value, dict):
            check_workspace_keys(value, where)
        else:
            flat[key] = value
    for key in flat:
        if key not in known:
            raise unknown_key(key, where, known)
    return flat


def check_workspace_keys(table: Mapping[str, Any], where: str) -> None:
    """Refuse unknown and retired keys of ``[tool.grocker.workspace]``."""
    for sub in table:
        dotted = f"workspace.{sub}"
        if dotted in RETIRED:
            raise ConfigError(f"'{dotted}' in {where} is no longer supported", RETIRED[dotted])
        if dotted not in WORKSPACE_KEYS:
            raise unknown_key(dotted, where, WORKSPACE_KEYS)


def unknown_key(key: str, where: str, known: Mapping[str, Any]) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(known))}"
    return ConfigError(f"unknown key '{key}' in {where}", hint)


def _check(key: Key, value: Any, where: str) -> Any:
    """Validate a value from a file against its kind and normalise it."""
    if value is None:
        return None
    try:
        return key.kind.check(value)
    except WrongType as exc:
        raise ConfigError(
            f"'{key.name}' in {where} must be {exc.expected}, not {type(value).__name__} {value!r}",
            f"write it as {key.name} = {key.kind.example}",
        ) from None


def _parse_env(key: Key, raw: str) -> Any:
    name = env_var(key.name)
    try:
        return key.kind.parse(raw)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ConfigError(
            f"environment variable {name}={raw!r} is not a valid {key.kind.name}",
            f"set it like {name}={key.kind.env_example}",
        ) from exc


def env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Parse ``GROCKER_*`` configuration variables; return them and warnings for unknown ones."""
    by_var = {key.env_var: key for key in KEYS.values() if key.env_var}
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
        values[key.name] = _parse_env(key, raw)
    return values, warnings


# GROCKER_* variables that are not configuration keys.
NON_CONFIG_ENV = {
    "GROCKER_TRACE_PLUGINS",
    "GROCKER_DISABLE_PLUGINS",
    "GROCKER_CACHE_HOME",
    "GROCKER_NO_PIP_CONFIG",
    "GROCKER_CACHE_WRITE",
    "GROCKER_NO_BYTECODE",
    "GROCKER_WARM_IDLE",
    "GROCKER_LEVEL_TESTS",
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

    ``overrides`` holds command-line values by dotted key (``"base-image"``); per-run options
    (``--tag``, ``--push``, ...) are not configuration: they go in :class:`RunOptions`.
    """
    project_dir = project_dir.resolve()
    if file_table is None:
        table, source = read_file_layer(project_dir)
    else:
        table, source = dict(file_table), f"{project_dir}"
    flat = flatten({k: v for k, v in table.items() if k != "workspace"}, source)
    values: dict[str, Any] = {name: key.default for name, key in KEYS.items()}
    for name, value in flat.items():
        values[name] = _check(KEYS[name], value, source)
    env_values, warnings = env_layer(environ or {})
    values.update(env_values)
    for message in warnings:
        if warn:
            warn(message)
    for name, value in (overrides or {}).items():
        if name not in KEYS:  # a frontend bug, not user input
            raise AssertionError(f"unknown override {name}")
        if value is not None:
            values[name] = value
    return _build(project_dir, values, source)


def _build(project_dir: Path, values: dict[str, Any], source: str) -> Config:
    """Validate each value (keys.py), then fill the Config fields the table names."""
    fields: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {"smoke_test": {}, "canary": {}, "watch": {}}
    for key in KEYS.values():
        value = values[key.name]
        if key.validate is not None:
            key.validate(value, source)
        table, _, sub = key.field.partition(".")
        if sub:
            nested[table][sub] = key.field_value(project_dir, value)
        else:
            fields[table] = key.field_value(project_dir, value)
    return Config(project_dir=project_dir, smoke_test=SmokeTest(**nested["smoke_test"]),
                  canary=Canary(**nested["canary"]), watch=Watch(**nested["watch"]), source=source, **fields)


def check_default_command(config: Config) -> None:
    """default-command must name a command, and the HTTP probe a server; checked once plugins have added
    their commands, before any container starts."""
    if config.smoke_test.port is not None and config.effective_default_command == "help":
        raise ConfigError(
            f"smoke-test.port {config.smoke_test.port} in {config.source} needs a server command to probe, "
            "and the image has none",
            'add a `server` command under [tool.grocker.commands] (or set default-command), or remove smoke-test.port')
    default = config.default_command
    if default and default not in config.commands and default not in RESERVED_COMMANDS:
        close = difflib.get_close_matches(default, list(config.commands) + sorted(RESERVED_COMMANDS), n=1)
        raise ConfigError(
            f"default-command '{default}' is not one of the configured commands",
            f"did you mean '{close[0]}'?" if close else "add it under [tool.grocker.commands]",
        )


def validate_reference(ref: str) -> None:
    """Check an image reference ``[registry/]name[:tag]``; raise ConfigError when invalid."""
    parse_reference(ref)
