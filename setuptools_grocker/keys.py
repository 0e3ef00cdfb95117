"""Every configuration key, declared once.

One :class:`Key` per key of ``[tool.grocker]``: its value :class:`Kind` (how a file value is
checked and an environment value parsed), default, documentation, the :class:`Config` field it
fills, whether a workspace member keeps it to itself (``member_only``), and whether it shapes the
image (``image_input``: part of every cache key). The loader (config.py), the workspace merge
(pipeline/workspace.py), the cache key (``Config.image_inputs``) and the generated reference
(docs/_ext/grocker_docs.py) all read this table; nothing else lists keys.

Per-run options (``--tag``, ``--no-cache``, ``--push``, ``--report``) are not keys: they live in
:class:`setuptools_grocker.config.RunOptions`, and never reach a cache key.
"""
from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from setuptools_grocker.errors import ConfigError
from setuptools_grocker.ref import NAME_PATTERN, TAG_PATTERN

if TYPE_CHECKING:
    from setuptools_grocker.config import Config

DEFAULT_BASE_IMAGE = "debian:bookworm-slim"
# The pytest script, not `python -m pytest`: -m would put the source tree first on sys.path
# and test it instead of the wheel just built.
DEFAULT_TEST_COMMAND = "pytest -q -p no:cacheprovider"

_IMAGE_NAME = NAME_PATTERN
_TAG = TAG_PATTERN
_COMMAND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED_COMMANDS = {"shell", "check", "run", "help"}
# `user` and `python` reach a shell in the root and compiler recipes: a POSIX user name (what
# Debian's useradd accepts, without the trailing '$' of machine accounts), and a program name or
# absolute path made of characters that mean nothing to a shell.
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_PYTHON = re.compile(r"^(?:/[A-Za-z0-9._+-]+)+$|^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# A Docker network's name (no ``container:NAME`` mode: a colon is no name's).
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# What follows host:port in the smoke-test URL: a path, and nothing that could change the host
# (``@evil.example/x``) or end the request line (spaces, control characters).
_HTTP_PATH = re.compile(r"^/[^\x00-\x20\x7f]*$")
_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?$")


class WrongType(Exception):
    """A file value of the wrong type; ``expected`` completes "must be ..."."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


# -- value kinds: how a file value is checked, an environment value parsed, a field filled ---------

def _scalar_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _words(raw: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[,\s]+", raw.strip()) if p)


def _check_str(value: Any) -> Any:
    if not isinstance(value, str):
        raise WrongType("a string")
    return value


def _check_bool(value: Any) -> Any:
    if not isinstance(value, bool):
        raise WrongType("true or false")
    return value


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)


def _check_int(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WrongType("an integer")
    return value


def _check_float(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WrongType("a number")
    return float(value)


def _check_list(value: Any) -> Any:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WrongType("a list of strings")
    return tuple(value)


def _check_command(value: Any) -> Any:
    # A command line may be written as one string: it is split into words.
    return tuple(value.split()) if isinstance(value, str) else _check_list(value)


def _check_ints(value: Any) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise WrongType("a list of integers")
    return tuple(value)


def _check_dict(value: Any) -> Any:
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
        raise WrongType("a table of strings")
    return {str(k): _scalar_str(v) for k, v in value.items()}


def _split_pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(text)
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def _parse_dict(raw: str) -> dict[str, str]:
    if raw.strip().startswith("{"):
        loaded = json.loads(raw)
        return {str(k): _scalar_str(v) for k, v in loaded.items()}
    return dict(_split_pair(p) for p in re.split(r"[,\n]", raw) if p.strip())


def _parse_lines(raw: str) -> tuple[str, ...]:
    if raw.strip().startswith("["):
        loaded = json.loads(raw)
        if not isinstance(loaded, list) or not all(isinstance(v, str) for v in loaded):
            raise ValueError(raw)
        return tuple(loaded)
    return tuple(line.strip() for line in raw.splitlines() if line.strip())


def _as_tuple(value: Any) -> Any:
    return None if value is None else tuple(value)


def _as_float(value: Any) -> Any:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Kind:
    """A value type: its name in messages, its name in the docs, and its three conversions."""

    name: str
    doc: str
    #: How to write it in TOML, and as an environment variable (for hints).
    example: str
    env_example: str
    #: File value -> normalised value; raises WrongType.
    check: Callable[[Any], Any]
    #: Environment string -> value; raises ValueError.
    parse: Callable[[str], Any]
    #: Normalised value -> the Config field's value (tuples for lists).
    to_field: Callable[[Any], Any] = lambda value: value


STR = Kind("str", "string", '"text"', "text", _check_str, lambda raw: raw)
BOOL = Kind("bool", "bool", "true", "1", _check_bool, _parse_bool)
INT = Kind("int", "int", "8000", "8000", _check_int, int)
FLOAT = Kind("float", "number", "30", "30", _check_float, float, _as_float)
LIST = Kind("list", "list", '["a", "b"]', "a,b", _check_list, _words, _as_tuple)
COMMAND = Kind("list", "list or string", '["a", "b"]', "a,b", _check_command, _words, _as_tuple)
#: Shell command lines, one per entry; from the environment one per line (or a JSON list).
LINES = Kind("list", "list of command lines", '["make assets"]', "make assets", _check_list, _parse_lines, _as_tuple)
INTS = Kind("ints", "list of int", "[8000]", "8000,8001", _check_ints, lambda raw: tuple(int(p) for p in _words(raw)),
            _as_tuple)
DICT = Kind("dict", "table", '{ NAME = "value" }', "NAME=value,OTHER=x", _check_dict, _parse_dict, dict)


def _check_services(value: Any) -> Any:
    # `worker = "worker"` is short for `worker = { command = "worker" }`; the sub-keys are checked by _services.
    if not isinstance(value, dict):
        raise WrongType("a table of services")
    services = {}
    for name, spec in value.items():
        spec = {"command": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict):
            raise WrongType("a table of services, each a command name or a table")
        services[str(name)] = {**spec, **({"env": _check_dict(spec["env"])} if "env" in spec else {})}
    return services


def _parse_services(raw: str) -> Any:
    try:
        return _check_services(json.loads(raw))
    except WrongType as exc:
        raise ValueError(exc.expected) from None


#: The companion services of `grocker ship` (``[tool.grocker.services]``): name -> command, replicas, env.
SERVICES = Kind("services", "table of services", '{ worker = { command = "worker", replicas = 1 } }',
                '{"worker": {"command": "worker"}}', _check_services, _parse_services,
                lambda value: {name: dict(spec) for name, spec in value.items()})


# -- validation of single values (cross-key checks stay in config.py) ----------------------------

def check_http_path(path: str, where: str = "smoke-test.path") -> None:
    """A path probed on 127.0.0.1 must be a path: a leading '/', no spaces or control characters."""
    if not path.startswith("/"):
        raise ConfigError(f"{where} {path!r} must start with '/'", f"write '/{path}'")
    if not _HTTP_PATH.match(path):
        raise ConfigError(f"{where} {path!r} contains spaces or control characters",
                          "percent-encode them (%20)")


def _commands(commands: Mapping[str, str], source: str) -> None:
    for name, line in commands.items():
        if not _COMMAND_NAME.match(name):
            raise ConfigError(f"command name {name!r} in {source} is not valid",
                              "use letters, digits, '-', '_' or '.'")
        if name in RESERVED_COMMANDS:
            raise ConfigError(f"command name '{name}' in {source} is built into the entrypoint",
                              "choose another name")
        if not line.strip():
            raise ConfigError(f"command '{name}' in {source} is empty", "give it a command line")
        try:
            shlex.split(line)
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            raise ConfigError(f"command '{name}' in {source} cannot be split into words ({str(exc).lower()}): "
                              f"{line!r}", "close the quote, or escape a literal quote or a final backslash "
                              "with a backslash") from None


def _build_commands(lines: tuple[str, ...], source: str) -> None:
    # Checked when the configuration loads, not after a full build: each line must be a command
    # line a POSIX shell can read (shlex is stricter than sh only about what sh rejects too).
    for line in lines:
        if not line.strip():
            raise ConfigError(f"build-commands in {source} has an empty command", "remove it, or give a command line")
        try:
            shlex.split(line)
        except ValueError as exc:
            raise ConfigError(f"build command {line!r} in {source} cannot be parsed: {exc}",
                              "close the quote, or escape it with a backslash") from exc


def _image_name(name: str | None, source: str) -> None:
    if name is not None and not _IMAGE_NAME.match(name):
        raise ConfigError(f"image-name {name!r} is not a valid image name",
                          "use lowercase letters, digits, '.', '_', '-' and '/'")


def _canary_steps(steps: tuple[int, ...], source: str) -> None:
    if not steps or list(steps) != sorted(set(steps)) or steps[0] <= 0 or steps[-1] != 100:
        raise ConfigError(f"canary.steps {list(steps)} in {source} is not a rising list of percents ending at 100",
                          "write e.g. canary.steps = [5, 25, 50, 100]")


_SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
_SERVICE_FIELDS = ("command", "replicas", "env")
#: Suffixes `grocker ship` already gives a meaning to (NAME-staging, NAME-canary, NAME-edge).
_TAKEN_SUFFIXES = ("staging", "canary", "edge")


def _services(services: Mapping[str, Mapping[str, Any]], source: str) -> None:
    import difflib

    for name, spec in services.items():
        where = f"services.{name} in {source}"
        if not _SERVICE_NAME.match(name) or name in _TAKEN_SUFFIXES:
            raise ConfigError(f"service name {name!r} in {source} is not valid (it becomes NAME-{name})",
                              "use lowercase letters, digits and '-' (at most 30), not staging, canary or edge")
        for sub in spec:
            if sub not in _SERVICE_FIELDS:
                close = difflib.get_close_matches(sub, _SERVICE_FIELDS, n=1)
                raise ConfigError(f"unknown key '{sub}' in {where}",
                                  f"did you mean '{close[0]}'?" if close else "valid keys: command, replicas, env")
        command = spec.get("command")
        if not isinstance(command, str) or not _COMMAND_NAME.match(command):
            raise ConfigError(f"{where}: command {command!r} is not the name of one of the image's commands",
                              f'write e.g. {name} = {{ command = "{name}" }} (a command of [tool.grocker.commands])')
        replicas = spec.get("replicas", 1)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ConfigError(f"{where}: replicas {replicas!r} is not a positive integer", "write e.g. replicas = 1")
        for var in spec.get("env", {}):
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", var):
                raise ConfigError(f"{where}: env {var!r} is not a variable name", "write env = { NAME = \"value\" }")


def _positive(value: float, source: str) -> None:
    if value <= 0:
        raise ConfigError(f"{value} in {source} must be positive", "give a number above 0")


def _not_negative(value: float, source: str) -> None:
    if value < 0:
        raise ConfigError(f"{value} in {source} must not be negative", "give 0 or a number above it")


def _probability(value: float, source: str) -> None:
    if not 0 < value < 1:
        raise ConfigError(f"alpha {value} in {source} is not between 0 and 1", "write e.g. 0.01")


def _port(port: int | None, source: str) -> None:
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"port {port} is out of range", "use a port between 1 and 65535")


def _smoke_network(network: str, source: str) -> None:
    if network == "host" or not _NETWORK_NAME.match(network):  # the host's ports; another container's namespace
        raise ConfigError(f"smoke-test.network {network!r} in {source} is not a network the smoke test can use",
                          "use none (the default), bridge or the name of a Docker network")


def _ports(ports: tuple[int, ...], source: str) -> None:
    for port in ports:
        _port(port, source)


def _packages(packages: tuple[str, ...], source: str) -> None:
    for pkg in packages:
        if not _DEBIAN_PACKAGE.match(pkg):
            raise ConfigError(f"system package {pkg!r} is not a valid Debian package name",
                              "use names as apt-get takes them, e.g. libpq5")


def _moving_tags(tags: tuple[str, ...], source: str) -> None:
    for moving in tags:
        if not _TAG.match(moving.replace("{date}", "20260101")):
            raise ConfigError(f"moving tag {moving!r} is not a valid tag",
                              "use letters, digits, '_', '.', '-' and {date}, e.g. nightly-{date}")


def _one_of(key: str, *choices: str) -> Callable[[str, str], None]:
    def check(value: str, source: str) -> None:
        if value not in choices:
            raise ConfigError(f"{key} {value!r} in {source} is not one of {', '.join(choices)}",
                              f"write {key} = \"{choices[0]}\" (the default) or one of the others")
    return check


def _unless_default(default: str) -> Callable[[Config, Any], Any]:
    # An image input only when changed: the default adds nothing, so the cache keys stay as they were
    # (the tool's identity, part of every key, says how the default builds).
    return lambda _, value: None if value == default else value


def _build_cache(value: str | None, source: str) -> None:
    if value is None:
        return
    from setuptools_grocker.ref import ImageRef

    ref = ImageRef.parse(value)
    if ref.host is None or ref.tag is not None or ref.digest is not None or not NAME_PATTERN.match(ref.path):
        raise ConfigError(f"build-cache {value!r} in {source} is not a registry repository",
                          'write it as REGISTRY/REPOSITORY, without a tag, e.g. build-cache = "registry.example:5000/'
                          'grocker-cache"')


def _user(user: str, source: str) -> None:
    if not _USER.match(user):
        raise ConfigError(f"user {user!r} is not a valid user name",
                          "use lowercase letters, digits, '_' and '-', starting with a letter or '_' (at most 32)")


def _python(python: str, source: str) -> None:
    if not _PYTHON.match(python):
        raise ConfigError(f"python {python!r} is not a program name or an absolute path",
                          "write e.g. python3, python3.11 or /usr/bin/python3 (letters, digits, '.', '_', '+', '-')")


# -- project-relative paths, and the image inputs that need more than the field's value -------------

def _path(project_dir: Path, value: str | None) -> Path | None:
    return None if value is None else (project_dir / value).resolve()


def _paths(project_dir: Path, value: tuple[str, ...]) -> tuple[Path, ...]:
    return tuple((project_dir / p).resolve() for p in value)


def _relative_paths(config: Config, paths: tuple[Path, ...]) -> list[str]:
    # Relative: the same project checked out elsewhere has the same key (and image).
    return [os.path.relpath(p, config.project_dir) for p in paths]


@dataclass(frozen=True)
class Key:
    """One configuration key and everything derived from it."""

    name: str
    kind: Kind
    default: Any
    doc: str
    #: The Config attribute it fills ("smoke_test.port" for a nested one); "" for workspace keys.
    field: str = ""
    #: In a workspace, a member's own (not inherited from the root's table).
    member_only: bool = False
    #: Shapes the image: part of ``Config.image_inputs()`` and so of every cache key.
    image_input: bool = False
    #: Part of ``image_inputs()`` only when set (not the default): a key added later leaves the cache
    #: keys of the projects that do not use it as they were.
    input_when_set: bool = False
    #: Its name in ``image_inputs()`` when not the key's own (kept so that cache keys stay stable).
    input_name: str | None = None
    #: Its value in ``image_inputs()`` when not the field's value made JSON-like.
    to_input: Callable[[Config, Any], Any] | None = None
    #: Raw value -> field value, for values relative to the project directory.
    convert: Callable[[Path, Any], Any] | None = None
    #: Checks the value (after the layers are applied); raises ConfigError naming the fix.
    validate: Callable[[Any, str], None] | None = None
    #: The default as the docs show it, when the value alone does not say it.
    default_doc: str | None = None
    #: Only in the workspace root's ``[tool.grocker.workspace]``; no environment variable.
    workspace: bool = False

    @property
    def env_var(self) -> str | None:
        return None if self.workspace else env_var(self.name)

    def field_value(self, project_dir: Path, value: Any) -> Any:
        return self.convert(project_dir, value) if self.convert else self.kind.to_field(value)

    def input_value(self, config: Config) -> Any:
        value: Any = config
        for part in self.field.split("."):
            value = getattr(value, part)
        if self.to_input is not None:
            return self.to_input(config, value)
        if isinstance(value, Mapping):
            return dict(sorted(value.items()))
        if isinstance(value, tuple):
            return list(value)
        return value


def env_var(key: str) -> str:
    return "GROCKER_" + key.upper().replace("-", "_").replace(".", "_")


TABLE: tuple[Key, ...] = (
    Key("base-image", STR, DEFAULT_BASE_IMAGE,
        "Debian-based image everything starts from. Pulled when absent; on machines without a public registry, "
        "make it with `grocker bootstrap-base`. A farm pins it by digest (`REGISTRY/REPO@sha256:...`, printed by "
        "`grocker bootstrap-base --push`). Enters the cache keys by its image ID (its content), not by this name.",
        "base_image"),
    # Not an image input: every key holds the root key, which holds the base's image ID (its content), not
    # the name it goes by here (`debian:bookworm-slim` on one machine, `REGISTRY/debian@sha256:...` on another).
    Key("python", STR, "python3", "interpreter of the base image; installed with apt when missing (a program name "
        "or an absolute path of `[A-Za-z0-9._+-]`)", "python", image_input=True, validate=_python),
    Key("system-packages.run", LIST, (), "Debian packages of the root image (runtime libraries: `libpq5`)",
        "run_packages", image_input=True, input_name="run", validate=_packages),
    Key("system-packages.build", LIST, (), "Debian packages of the compiler image only (`libpq-dev`)",
        "build_packages", image_input=True, input_name="build", validate=_packages),
    Key("commands", DICT, {}, "entrypoint commands: name -> command line "
        '(`server = "gunicorn app:wsgi -b 0.0.0.0:${PORT}"`); `$VAR` is expanded at run time',
        "commands", member_only=True, image_input=True, validate=_commands),
    Key("default-command", STR, None, "what the container runs without arguments", "default_command",
        member_only=True, image_input=True, default_doc="`server` if defined, else `help`",
        # The command the image runs, whether written or implied.
        to_input=lambda config, _: config.effective_default_command),
    Key("ports", INTS, (), "`EXPOSE`d ports", "ports", member_only=True, image_input=True, validate=_ports),
    Key("volumes", LIST, (), "`VOLUME`s declared in the image", "volumes", member_only=True, image_input=True),
    Key("env", DICT, {}, "default environment of the commands (lowest priority, see below)", "env",
        image_input=True),
    Key("extras", LIST, (), "extras of the project to install (`myapp[pg]`)", "extras", member_only=True,
        image_input=True, to_input=lambda _, extras: sorted(extras)),
    # Not an image input by itself: the cache key hashes the file's content instead.
    Key("constraints", STR, None, "pip constraints file (relative to the project) used in the compile stage",
        "constraints", convert=_path),
    # Not an image input by itself: the cache key hashes the lock file's bytes instead (when there is one).
    Key("lock", STR, None, "the application's PEP 751 lock (relative to the project), written by `grocker "
        "lock`: when the file exists, builds install the closure it pins, checked by hash, without resolving",
        "lock", member_only=True, convert=_path, default_doc="`pylock.toml`"),
    Key("installer", STR, "uv", "what does the Python packaging work of the compile stage: `uv` (resolution, "
        "builds, environments; pinned, fetched from the configured index) or `pip` (the build venv's pip only)",
        "installer", image_input=True, input_when_set=True, to_input=_unless_default("uv"),
        validate=_one_of("installer", "uv", "pip")),
    Key("index-strategy", STR, "first-index", "with several indexes: `first-index` takes each package from the "
        "first index that has it (extra indexes before the default one: a private package cannot be shadowed "
        "by a public one of the same name); `unsafe-best-match` takes the best version across all indexes "
        "(pip's rule). Used with `installer = \"uv\"`", "index_strategy", image_input=True,
        input_when_set=True, to_input=_unless_default("first-index"),
        validate=_one_of("index-strategy", "first-index", "unsafe-best-match")),
    Key("local-packages", LIST, (), "directories of other projects (relative paths) built as wheels in the same "
        "compile, for dependencies that are not on an index", "local_packages", member_only=True,
        image_input=True, to_input=_relative_paths, convert=_paths),
    Key("build-commands", LINES, (), "shell command lines run in the compiler container, in a copy of the "
        "project's source, before its wheel is built (`python manage.py collectstatic --noinput`), with the "
        "project and its dependencies installed in a venv on `PATH`; files they write go into the wheel as the "
        "build backend packs them", "build_commands", member_only=True, image_input=True, input_when_set=True,
        validate=_build_commands, default_doc="none"),
    Key("smoke-test.command", COMMAND, (), "an extra command the image must run with exit code 0 before it "
        "is tagged", "smoke_test.command", member_only=True, image_input=True, default_doc="none"),
    Key("smoke-test.port", INT, None, "container port of the HTTP probe (the default command is started for it)",
        "smoke_test.port", member_only=True, image_input=True, validate=_port),
    Key("smoke-test.path", STR, "/", "path probed (starts with `/`, no spaces or control characters); any status "
        "below 400 passes", "smoke_test.path", member_only=True, image_input=True,
        validate=lambda path, _: check_http_path(path)),
    Key("smoke-test.timeout", FLOAT, 60.0, "seconds the probe may take", "smoke_test.timeout", image_input=True),
    Key("smoke-test.network", STR, "none", "network of the smoke test's server container: `none` (no network: the "
        "probe runs inside the container) or a Docker network (`bridge`) for a server that needs one to start",
        "smoke_test.network", image_input=True, input_when_set=True, to_input=_unless_default("none"),
        validate=_smoke_network),
    Key("labels", DICT, {}, "extra image labels", "labels", image_input=True),
    Key("image-name", STR, None, "repository part of the default tag", "image_name", member_only=True,
        default_doc="project name, normalised", validate=_image_name),
    Key("registry", STR, None, "registry host (`registry.example:5000`) prefixed to the default tag and used by "
        "`--push`", "registry"),
    Key("build-cache", STR, None, "registry repository (`registry.example:5000/grocker-cache`) shared by machines: "
        "root and compiler images are looked up there by key and pulled before anything is built; only a run "
        "with `--cache-write` (or `GROCKER_CACHE_WRITE=1`) pushes what it built", "build_cache",
        validate=_build_cache),
    Key("user", STR, "app", "name of the non-root runtime user (uid 10001); a POSIX user name "
        "`[a-z_][a-z0-9_-]{0,31}`", "user", image_input=True, validate=_user),
    Key("image", BOOL, None, "workspace: this member gets an image (also implied by `commands`)", "image",
        member_only=True),
    Key("test-command", STR, None, "workspace: how a library's tests run (in a copy of its source, with the "
        "wheel installed)", "test_command", member_only=True,
        default_doc=f"`{DEFAULT_TEST_COMMAND}` when the project has tests"),
    Key("test-extras", LIST, None, "workspace: extras installed for the tests", "test_extras", member_only=True,
        default_doc="the project's `test`/`tests`/`testing` extras"),
    Key("plugins", LIST, (), "plugins to load (pluggy)", "plugins"),
    Key("cache-dir", STR, None, "where the project's build state and wheelhouse live", "cache_dir",
        convert=_path, default_doc="`.grocker`"),
    Key("moving-tags", LIST, (), "extra tags that follow every new image, `{date}` = UTC `YYYYMMDD` "
        '(`["latest", "nightly-{date}"]`); pushed with `--push`', "moving_tags", validate=_moving_tags),
    Key("functional-tests", STR, None, "`grocker ship`: the functional tests run against the staging service "
        "(`pytest tests/functional`), by `sh -c` in a container of the image (or `functional-tests-image`) on "
        "the staging service's network, with its URL in `GROCKER_TARGET_URL`; exit code 0 passes",
        "functional_tests"),
    Key("functional-tests-image", STR, None, "`grocker ship`: the image the functional tests run in",
        "functional_tests_image", default_doc="the image shipped"),
    Key("pre-deploy", STR, None, "`grocker ship`: a job run once from the new image before production is touched "
        "(database migrations: `flask db upgrade`), by `sh -c` in a container of the image on the service's network, "
        "with production's `--env` and env files; a non-zero exit stops the release", "pre_deploy"),
    Key("services", SERVICES, {}, "`grocker ship`: the application's other services, released with the web service "
        "from the same image: NAME-SUFFIX runs the image command `command` (`replicas`, `env` optional)",
        "services", validate=_services, default_doc="none"),
    Key("services-watch", FLOAT, 60.0, "`grocker ship`: seconds the tasks of the other services are watched after "
        "their update; a task of the release that fails or exits rolls the whole release back", "services_watch",
        validate=_positive),
    Key("canary.steps", INTS, (5, 25, 50, 100), "`grocker ship`: the canary's share of the traffic (percent) at "
        "each step; the last step must be 100 (promotion)", "canary.steps", validate=_canary_steps,
        default_doc="`[5, 25, 50, 100]`"),
    Key("canary.window", FLOAT, 60.0, "`grocker ship`: seconds of traffic compared at each canary step",
        "canary.window", validate=_positive),
    Key("canary.min-requests", INT, 50, "`grocker ship`: requests each side (canary, stable) needs in a window "
        "for a verdict; fewer is `inconclusive`", "canary.min_requests", validate=_positive),
    Key("canary.max-inconclusive", INT, 3, "`grocker ship`: inconclusive windows in a row a step waits before "
        "the canary is rolled back", "canary.max_inconclusive", validate=_positive),
    Key("canary.alpha", FLOAT, 0.01, "`grocker ship`: significance level of the one-sided tests (errors: two "
        "proportions; latency: Mann-Whitney U)", "canary.alpha", validate=_probability),
    Key("canary.latency-margin-ms", FLOAT, 25.0, "`grocker ship`: a canary slower by a significant rank test "
        "fails only when its median total time also exceeds the stable's by this many ms", "canary.latency_margin_ms"),
    Key("irreversible", BOOL, False, "`grocker ship`: every release of this project is irreversible from its "
        "promotion on (a migration that cannot be undone): drift makes the watch alert instead of rolling back "
        "(`--irreversible` marks one release)", "irreversible"),
    Key("watch.bake", FLOAT, 600.0, "`grocker ship`: seconds after a promotion during which production is "
        "compared with its baseline from before the release (drift rolls back); 0: no bake window",
        "watch.bake", validate=_not_negative),
    Key("watch.window", FLOAT, 60.0, "`grocker ship`'s bake window and `grocker watch`: seconds of traffic "
        "judged against the baseline at each window", "watch.window", validate=_positive),
    Key("watch.baseline", FLOAT, 600.0, "seconds of the stable release's request log, before the canary "
        "starts, that make production's baseline (the stable's requests during the canary steps are added)",
        "watch.baseline", validate=_positive),
    Key("watch.min-requests", INT, 50, "requests a window (and the baseline) needs for a verdict; fewer is "
        "`inconclusive` (the watch waits)", "watch.min_requests", validate=_positive),
    Key("watch.alpha", FLOAT, 0.001, "significance level of the drift tests (lower than the canary's: the "
        "watch judges a window every `watch.window` seconds, forever)", "watch.alpha", validate=_probability),
    Key("watch.latency-margin-ms", FLOAT, 50.0, "a significantly slower window is drift only when its median "
        "total time exceeds the baseline's by this many ms", "watch.latency_margin_ms", validate=_not_negative),
    Key("watch.fail-windows", INT, 2, "failing windows in a row that make a drift (a rollback, or an alert "
        "for an irreversible release)", "watch.fail_windows", validate=_positive),
    # The workspace root's own table. Its values are checked where they are read (pipeline/workspace.py).
    Key("workspace.members", LIST, (), "globs of the member directories", workspace=True),
    Key("workspace.exclude", LIST, (), "globs of directories that are not members", workspace=True),
    Key("workspace.index-url", STR, None, "PyPI-compatible index to share wheels through (no credentials "
        "here: `GROCKER_WORKSPACE_INDEX_URL` or `~/.netrc`)", workspace=True),
    Key("workspace.release-image", STR, None, "repository of the release documents", workspace=True,
        default_doc="`ROOTNAME-release`"),
    Key("workspace.untrusted", LIST, (), "globs of members whose build code never runs on the host and that get "
        "a pip cache of their own", workspace=True),
)

#: Project keys (and their environment variables), by name.
KEYS: dict[str, Key] = {k.name: k for k in TABLE if not k.workspace}
WORKSPACE_KEYS: dict[str, Key] = {k.name: k for k in TABLE if k.workspace}
#: Table names, so that ``[tool.grocker.smoke-test]`` is not reported as an unknown key.
TABLES = {k.name.split(".", 1)[0] for k in TABLE if "." in k.name}
#: Keys that describe one workspace member only; they are not inherited from the workspace root.
MEMBER_ONLY = frozenset(k.name for k in TABLE if k.member_only)
#: Keys that were accepted once and are not any more: the error says what replaces them.
RETIRED: dict[str, str] = {
    # Once accepted and silently ignored: wheels always went to the root's .grocker/wheels.
    "workspace.wheelhouse": "remove it: a workspace keeps its wheels in .grocker/wheels/ under its root; "
                            "to share them between machines, set workspace.index-url",
}
