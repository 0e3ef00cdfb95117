"""The entrypoint baked into every runtime image built by setuptools-grocker.

    <image> [COMMAND] [ARGS...]

COMMAND is one of the configured commands (server, worker, ...), or:
    shell          an interactive shell with the venv on PATH
    check          import the application's modules and resolve its console scripts
    check --health SECONDS  then wait up to SECONDS for the server of this container to answer its
                   health path, and check that it listens on every interface (the smoke test)
    health [PORT [PATH]]  GET the smoke-test path of the running server (the image's HEALTHCHECK)
    run SCRIPT ..  run a console script (or any program) from the venv
    help           list the commands
Anything else is executed as given.

Environment, lowest priority first: the image's configured ``env``, then every
``*.env`` file of $GROCKER_CONFIG_DIR (default /config; sorted by name; ``KEY=VALUE``
lines, ``#`` comments, optional ``export`` and quotes), then the variables given to the
container (``docker run -e``). Command lines may use ``$VAR`` / ``${VAR}``.
The process is exec'd, so signals from ``docker stop`` reach it (tini is PID 1).
"""
import json
import os
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load_app():
    with open(os.path.join(HERE, "app.json")) as fh:
        return json.load(fh)


def parse_env_file(path):
    values = {}
    with open(path, encoding="utf-8") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export "):].lstrip()
            if "=" not in line:
                sys.stderr.write("grocker: %s:%d: expected KEY=VALUE, ignored\n" % (path, number))
                continue
            key, value = line.split("=", 1)
            key, value = key.strip(), value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key] = value
    return values


def build_environment(app):
    env = dict(app.get("env", {}))
    config_dir = os.environ.get("GROCKER_CONFIG_DIR", "/config")
    try:
        names = sorted(os.listdir(config_dir)) if os.path.isdir(config_dir) else []
    except OSError as exc:
        sys.stderr.write("grocker: cannot read the config directory %s (%s); is it readable by uid %d?\n"
                         % (config_dir, exc.strerror, os.getuid()))
        names = []
    if names:
        for name in names:
            path = os.path.join(config_dir, name)
            if name.endswith(".env") and os.path.isfile(path):
                try:
                    env.update(parse_env_file(path))
                except OSError as exc:
                    sys.stderr.write("grocker: cannot read %s: %s\n" % (path, exc.strerror))
    # Variables given to the container (docker run -e, the image's ENV) win.
    env.update(os.environ)
    return env


def expand(argv, env):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return [os.path.expandvars(a) for a in argv]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def usage(app):
    lines = ["%s %s" % (app["name"], app["version"]), "", "commands:"]
    for name, line in sorted(app.get("commands", {}).items()):
        lines.append("  %-12s %s" % (name, line))
    lines += [
        "  %-12s %s" % ("shell", "an interactive shell"),
        "  %-12s %s" % ("check", "import the application and resolve its console scripts"),
        "  %-12s %s" % ("health", "probe the running server (the image's health check)"),
        "  %-12s %s" % ("run", "run SCRIPT [ARGS...] from the venv"),
        "  %-12s %s" % ("help", "this text"),
        "",
        "default command: %s" % app.get("default_command", "help"),
        "env files: $GROCKER_CONFIG_DIR/*.env (default /config)",
    ]
    print("\n".join(lines))


def _normalize(name):
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def optional_requirements(app):
    """The application's requirements needed only by extras that are not installed: name -> extras.

    A module or console script that needs one of those (black's ``blackd`` needs aiohttp, from
    the ``d`` extra) cannot import in the image, by the project's own design: `check` skips it.
    """
    import re
    from importlib import metadata

    installed = {_normalize(e) for e in app.get("extras", [])}
    try:
        requires = metadata.distribution(app["name"]).requires or []
    except Exception:  # the application is not an installed distribution: nothing is optional
        return {}
    optional: dict[str, set[str]] = {}
    for requirement in requires:
        spec, _, marker = requirement.partition(";")
        extras = {_normalize(e) for e in re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)}
        if extras and not extras & installed:
            name = re.split(r"[\s\[<>=!~;(@]", spec.strip(), maxsplit=1)[0]
            optional.setdefault(_normalize(name), set()).update(extras)
    return optional


def _missing_module(exc):
    """The top-level name of the module whose absence caused ``exc`` (through its causes), if any."""
    import re

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            return exc.name.split(".")[0]
        found = re.search(r"No module named '([^'.]+)", str(exc))
        if found:
            return found.group(1)
        exc = exc.__cause__ or exc.__context__
    return None


def _entry_point_extras(ep):
    extras = getattr(ep, "extras", None)
    if extras is None:  # Pythons before 3.9: parse "module:attr [extra1, extra2]"
        import re

        found = re.search(r"\[([^\]]*)\]\s*$", ep.value)
        extras = [e.strip() for e in found.group(1).split(",")] if found else []
    return [_normalize(e) for e in extras if e]


def check(app):
    import importlib
    import shutil
    from importlib import metadata

    failures = 0
    optional = optional_requirements(app)
    installed = {_normalize(e) for e in app.get("extras", [])}
    scripts = set(app.get("scripts", []))
    try:
        entry_points = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name in scripts]
    except Exception as exc:
        failures += 1
        print("FAIL console script entry points: %s: %s" % (type(exc).__name__, exc))
        entry_points = []
    # Console scripts declared for an extra that is not installed (`blackd = blackd:main [d]`),
    # and the modules they start, need what the image deliberately does not have.
    needs_extra = {}
    for ep in entry_points:
        missing = [e for e in _entry_point_extras(ep) if e not in installed]
        if missing:
            needs_extra[ep.name] = missing
            needs_extra[ep.value.split(":")[0].split(".")[0].strip()] = missing
    for module in app.get("modules", []):
        try:
            importlib.import_module(module)
            print("ok   import %s" % module)
        except Exception as exc:  # report every failure, not just the first
            absent = _missing_module(exc)
            extras = (optional.get(_normalize(absent)) or needs_extra.get(module)) if absent else None
            if extras:
                print("skip import %s: needs %s from the extra [%s], not installed"
                      % (module, absent or "more", ",".join(sorted(extras))))
                continue
            failures += 1
            print("FAIL import %s: %s: %s" % (module, type(exc).__name__, exc))
    for script in app.get("scripts", []):
        if shutil.which(script):
            print("ok   script %s" % script)
        else:
            failures += 1
            print("FAIL script %s: not found on PATH" % script)
    for ep in entry_points:
        if ep.name in needs_extra:
            print("skip script %s: needs the extra [%s], not installed" % (ep.name, ",".join(needs_extra[ep.name])))
            continue
        try:
            ep.load()
        except Exception as exc:
            absent = _missing_module(exc)
            if absent and _normalize(absent) in optional:
                print("skip script %s: needs %s from the extra [%s], not installed"
                      % (ep.name, absent, ",".join(sorted(optional[_normalize(absent)]))))
                continue
            failures += 1
            print("FAIL console script %s: %s: %s" % (ep.name, type(exc).__name__, exc))
    for name, line in sorted(app.get("commands", {}).items()):
        program = shlex.split(line)[0] if line.strip() else ""
        if program.startswith("$"):
            continue
        if shutil.which(program) is None:
            failures += 1
            print("FAIL command %s: program %r not found in the image" % (name, program))
        else:
            print("ok   command %s" % name)
    print("check: %s" % ("FAILED (%d)" % failures if failures else "passed"))
    return 1 if failures else 0


#: Exit codes of ``check --health``: no good answer in time; an answer, from a server listening on loopback alone.
UNHEALTHY = 3
LOOPBACK_ONLY = 4
#: The kernel's tables of TCP sockets of this network namespace, and the hex width of their addresses.
PROC_TABLES = (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32))


def probe(port, path):
    """GET http://127.0.0.1:PORT/PATH: (HTTP status or None, what went wrong)."""
    import urllib.error
    import urllib.request

    url = "http://127.0.0.1:%s%s" % (port, path)
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, "HTTP %d" % resp.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, "HTTP %d" % exc.code
    except Exception as exc:  # refused, timed out, reset
        return None, str(getattr(exc, "reason", exc))


def _listening(port):
    """The local addresses of the sockets listening on TCP ``port`` in this container (/proc/net/tcp{,6})."""
    found = []
    for table, width in PROC_TABLES:
        try:
            with open(table) as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
                continue
            address, _, hexport = fields[1].partition(":")
            if len(address) == width and int(hexport, 16) == port:
                # The kernel prints each 32-bit word in host (little-endian) byte order.
                words = [bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, width, 8)]
                found.append(b"".join(words))
    return found


def loopback_only(port):
    """The address a server listens on when it listens on loopback alone (unreachable from outside the
    container), else None (it listens on every interface or another address, or this cannot be told)."""
    import ipaddress

    addresses = [ipaddress.ip_address(raw) for raw in _listening(port)]
    mapped = [getattr(a, "ipv4_mapped", None) or a for a in addresses]
    if mapped and all(a.is_loopback for a in mapped):
        return "%s:%d" % (addresses[0], port)
    return None


def wait_healthy(app, seconds):
    """After ``check``: wait up to ``seconds`` for the server of this container to answer its health path."""
    conf = app.get("health") or {}
    port, path = conf.get("port"), conf.get("path", "/")
    if not port:
        return 0
    deadline = time.monotonic() + seconds
    pause = 0.02
    while True:
        code, last = probe(port, path)
        if code is not None and code < 400:
            break
        if time.monotonic() >= deadline:
            print("unhealthy: GET %s on port %s got no good answer within %gs (last: %s)" % (path, port, seconds, last))
            return UNHEALTHY
        time.sleep(pause)
        pause = min(pause * 1.5, 0.2)
    alone = loopback_only(int(port))
    if alone:
        print("unhealthy: the server listens on %s only: nothing outside its container can reach it" % alone)
        return LOOPBACK_ONLY
    print("healthy: GET %s on port %s answered %d" % (path, port, code))
    return 0


def health(app, args):
    """Exit 0 when the server answers GET PATH on 127.0.0.1:PORT below 400 (the image's HEALTHCHECK)."""
    conf = app.get("health") or {}
    port = args[0] if args else conf.get("port")
    path = args[1] if len(args) > 1 else conf.get("path", "/")
    if not port:
        return check(app)
    if not str(port).isdigit() or not str(path).startswith("/"):
        # Both are appended to http://127.0.0.1: "@host/..." would probe another host.
        print("unhealthy: port %r and path %r are not a port number and a path starting with /" % (port, path))
        return 1
    url = "http://127.0.0.1:%s%s" % (port, path)
    code, last = probe(port, path)
    if code is None:
        print("unhealthy: %s: %s" % (url, last))
        return 1
    print("%s: %s %d" % ("healthy" if code < 400 else "unhealthy", url, code))
    return 0 if code < 400 else 1


def execute(argv, env):
    argv = expand(argv, env)
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        sys.stderr.write("grocker: %s: command not found; try `help`\n" % argv[0])
        return 127
    except PermissionError:
        sys.stderr.write("grocker: %s: permission denied\n" % argv[0])
        return 126


def main(argv):
    app = load_app()
    if not argv:
        argv = [app.get("default_command", "help")]
    command, args = argv[0], argv[1:]
    env = build_environment(app)
    commands = app.get("commands", {})
    if command in commands:
        return execute(shlex.split(commands[command]) + args, env)
    if command == "help" or command in ("-h", "--help"):
        usage(app)
        return 0
    if command == "check":
        os.environ.clear()
        os.environ.update(env)
        seconds = None
        if args:
            try:
                if args[0] != "--health" or len(args) != 2:
                    raise ValueError(args)
                seconds = float(args[1])
            except ValueError:
                sys.stderr.write("grocker: usage: check [--health SECONDS]\n")
                return 2
        code = check(app)
        return code if code or seconds is None else wait_healthy(app, seconds)
    if command == "health":
        return health(app, args)
    if command == "shell":
        shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        return execute([shell] + args, env)
    if command == "run":
        if not args:
            sys.stderr.write("grocker: run needs a SCRIPT; try `help`\n")
            return 2
        return execute(args, env)
    return execute(argv, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
