"""Runs inside the compiler container: build the wheels of a project and its closure.

Invoked as ``python compile_driver.py /job/job.json`` by setuptools-grocker. Only the
standard library, pip and (with ``"installer": "uv"``, the default) the build venv's ``uv`` are
used. The source trees are mounted read-only; each is copied (only the files the host listed) to
a scratch directory, so in-tree builds work and build outputs never reach the host's source tree.

With uv: wheels of local projects are built by ``uv build`` (isolated); the closure is resolved by
``uv pip compile --generate-hashes`` and its files fetched, checked by hash, by ``pip wheel --no-deps
--require-hashes`` (uv has no ``pip wheel``/``pip download``; pip also builds the few sdists); test and
build-commands environments are ``uv venv`` + ``uv pip install``. uv's cache and the scratch
directory of its environments are one mount (``/uv``); ``UV_LINK_MODE=copy`` (set by the host) keeps
every environment's files apart from the cache's, since project code runs in all of them.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
PIP = [sys.executable, "-m", "pip"]
UV = os.path.join(os.path.dirname(sys.executable), "uv")
# Isolated PEP 517 builds for every project, setup.py-only ones included (pip's own future
# default): the build venv needs no setuptools or wheel of its own.
PEP517 = ["--use-pep517"]
NO_TESTS_COLLECTED = 5


def log(msg):
    print("[compile] " + msg, flush=True)


def copy_tree(src, files, dest):
    for rel in files:
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(src, rel), target)


def pip(*args, env=None):
    cmd = PIP + list(args)
    log("+ pip " + " ".join(args))
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        log("pip failed with exit code %d" % proc.returncode)
        sys.exit(20)
    log("  %.1fs" % (time.monotonic() - start))


def uv_index_args():
    # pip's no-index: uv has a flag for it, no variable (the host sets this one).
    return ["--no-index"] if os.environ.get("GROCKER_UV_NO_INDEX") == "1" else []


def uv_find_links(*extra):
    """``--find-links`` options for uv: a directory of this run's wheels given on the command line replaces
    the user's UV_FIND_LINKS (the option and the variable are one setting), so both are given here."""
    links = [p for p in os.environ.get("UV_FIND_LINKS", "").split(",") if p] + [p for p in extra if p]
    return [arg for link in links for arg in ("--find-links", link)]


def uv(*args, exit_code=20):
    """Run uv; on failure end the compile with ``exit_code`` (the host reads uv's output for the cause)."""
    log("+ uv " + " ".join(args))
    start = time.monotonic()
    proc = subprocess.run([UV] + list(args))
    if proc.returncode != 0:
        log("uv failed with exit code %d" % proc.returncode)
        sys.exit(exit_code)
    log("  %.1fs" % (time.monotonic() - start))


def using_uv(job):
    return job.get("installer") == "uv"


def build_wheel(job, tree, out_dir):
    """One isolated PEP 517 wheel of the project in ``tree`` (a scratch copy), into ``out_dir``."""
    if using_uv(job):
        uv("build", "--wheel", "--out-dir", out_dir, "--python", sys.executable, *uv_index_args(), tree)
    else:
        pip("wheel", *PEP517, "--no-deps", "--wheel-dir", out_dir, tree)


def env_dir(job, name):
    """Where an environment is made: with uv, in the run's scratch directory beside uv's cache (one mount)."""
    return os.path.join(job.get("uv_scratch") or scratch_dir(job), name)


def scratch_dir(job):
    """This compile's scratch directory: its own in a container shared by several compiles (the host names
    one below the compile's staging directory), else in /tmp."""
    return job.get("scratch") or "/tmp/grocker-build"


def make_env(job, path, requirements, *, find_links=None, exit_code=22, what="environment"):
    """A fresh venv at ``path`` with ``requirements`` installed; exit with ``exit_code`` when that fails.
    Returns the environment variables that put it first on PATH."""
    python = os.path.join(path, "bin", "python")
    start = time.monotonic()
    links = ["--find-links", find_links] if find_links else []
    if using_uv(job):
        # --seed: pip in the environment, as `python -m venv` gives it: test commands and build-commands
        # often run `pip install -r requirements/tests.txt` first (the Pallets projects do).
        uv("venv", "--quiet", "--seed", "--python", sys.executable, path, exit_code=exit_code)
        args = [UV, "pip", "install", "--python", python, *uv_index_args(), *uv_find_links(find_links),
                *requirements]
        log("+ uv " + " ".join(args[1:]))
    else:
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        args = [python, "-m", "pip", "install", "--disable-pip-version-check", *PEP517, *links, *requirements]
        log("+ pip " + " ".join(args[3:]))
    if subprocess.run(args).returncode != 0:
        log("installing the %s failed" % what)
        sys.exit(exit_code)
    log("  %.1fs" % (time.monotonic() - start))
    return dict(os.environ, PATH=os.path.join(path, "bin") + ":" + os.environ.get("PATH", ""), VIRTUAL_ENV=path)


def locked_entries(text, own):
    """The requirement entries of a ``uv pip compile`` output (continuation lines joined), without
    those naming one of the files in ``own`` (the project's and the internal wheels: copied as they are)."""
    entries, current = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current.append(stripped.rstrip("\\").strip())
        if not stripped.endswith("\\"):
            entries.append(" ".join(current))
            current = []
    if current:
        entries.append(" ".join(current))
    kept = []
    for entry in entries:
        first = entry.split()[0]
        path = first[len("file://"):] if first.startswith("file://") else first
        if path not in own:
            kept.append(entry)
    return kept


def resolve_closure(job, requirement, internal, local_out, wheels_dir, scratch):
    """The wheels of the closure of ``requirement`` (the project's wheel, with its extras) and of the
    internal wheels, in ``wheels_dir``. Internal dependencies are given as files: they come from this
    run, never from an index."""
    if not using_uv(job):
        pip("wheel", *PEP517, "--wheel-dir", wheels_dir, "--find-links", local_out, requirement, *internal)
        return
    wanted = os.path.join(scratch, "closure.in")
    locked = os.path.join(scratch, "closure.txt")
    own = [requirement.split("[")[0]] + list(internal)
    with open(wanted, "w") as fh:
        fh.write("\n".join([requirement] + list(internal)) + "\n")
    uv("pip", "compile", "--quiet", "--generate-hashes", "--no-header", "--no-annotate", "--python", sys.executable,
       *uv_index_args(), *uv_find_links(local_out), "--output-file", locked, wanted)
    with open(locked) as fh:
        entries = locked_entries(fh.read(), set(own))
    for path in own:
        shutil.copy2(path, os.path.join(wheels_dir, os.path.basename(path)))
    if not entries:
        return
    fetch_entries(entries, wheels_dir, local_out, scratch)


def fetch_entries(entries, wheels_dir, local_out, scratch):
    """The wheels of ``entries`` (pinned, hashed requirement lines) into ``wheels_dir``: from the by-sha256
    store when there, else fetched (or built from an sdist) by pip, each checked against its hashes."""
    entries = [e for e in entries if not take_fetched(e, wheels_dir) and not take_built(e, wheels_dir)]
    if not entries:
        log("every wheel of the closure taken from the cache, checked by hash")
        return
    before = set(os.listdir(wheels_dir))
    fetch = os.path.join(scratch, "closure-fetch.txt")
    with open(fetch, "w") as fh:
        fh.write("\n".join(entries) + "\n")
    # Every entry is pinned and hashed: the user's constraints were applied by the resolution (and pip
    # wants hashes on constraints in hash-checking mode). Wheels are fetched as they are, each checked
    # against its hash; the few sdists are built (isolated).
    env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}
    pip("wheel", *PEP517, "--no-deps", "--require-hashes", "--wheel-dir", wheels_dir, "--find-links", local_out,
        "-r", fetch, env=env)
    keep_wheels(entries, [os.path.join(wheels_dir, w) for w in sorted(set(os.listdir(wheels_dir)) - before)])


# Exit codes of a build with a lock: its inputs are not the project's any more (stale); it cannot be used.
LOCK_STALE = 27
LOCK_UNUSABLE = 28


def name_of(path):
    """A wheel file's normalized project name."""
    return os.path.basename(path).split("-")[0].lower().replace("_", "-").replace(".", "-")


def lock_inputs(job, project_wheel, local_out):
    """The digest of what decides the closure (pipeline/lock.py): the metadata of the project's wheel and of
    every wheel built from source in this compile, the host's part (extras, constraints, index strategy) and
    this Python's version."""
    built = [project_wheel, *job.get("internal_wheels", []),
             *(os.path.join(local_out, w) for w in sorted(os.listdir(local_out)) if w.endswith(".whl"))]
    data = {
        "metadata": sorted(json.dumps(closure_metadata(w), sort_keys=True) for w in built),
        "host": job.get("lock_inputs") or {},
        "python": "%d.%d" % sys.version_info[:2],
    }
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def write_lock_resolution(job, requirement, project_wheel, local_out, scratch):
    """``grocker lock``: resolve the closure into ``out/pylock.toml`` (uv's PEP 751 lock, hashed) and say in
    ``out/lock.json`` what the host drops from it (the wheels built here) and the inputs' digest."""
    if not using_uv(job):
        log("grocker lock needs uv")
        sys.exit(LOCK_UNUSABLE)
    wanted = os.path.join(scratch, "lock.in")
    internal = list(job.get("internal_wheels", []))
    with open(wanted, "w") as fh:
        fh.write("\n".join([requirement] + internal) + "\n")
    # uv writes the PEP 751 format only to a file named pylock.toml (or pylock.NAME.toml).
    where = os.path.join(scratch, "lock")
    os.makedirs(where, exist_ok=True)
    # A workspace lock's second pass: the versions the other applications share (never part of the inputs).
    pins = []
    if job.get("lock_pins"):
        pinned = os.path.join(scratch, "lock-pins.txt")
        with open(pinned, "w") as fh:
            fh.write("\n".join(job["lock_pins"]) + "\n")
        pins = ["--constraint", pinned]
    # --refresh: the index as it is now, not as uv's cache last saw it (a lock is written to take what is new).
    uv("pip", "compile", "--quiet", "--refresh", "--format", "pylock.toml", "--generate-hashes", "--no-header",
       "--python", sys.executable, *uv_index_args(), *uv_find_links(local_out), *pins,
       "--output-file", os.path.join(where, "pylock.toml"), wanted)
    shutil.copy2(os.path.join(where, "pylock.toml"), os.path.join(job["out"], "pylock.toml"))
    built = [name_of(project_wheel)] + [name_of(w) for w in internal] + [
        name_of(w) for w in os.listdir(local_out) if w.endswith(".whl")]
    with open(os.path.join(job["out"], "lock.json"), "w") as fh:
        json.dump({"inputs": lock_inputs(job, project_wheel, local_out), "built": sorted(set(built))}, fh)


def locked_closure(job, project_wheel, local_out, wheels_dir, scratch):
    """The closure as the lock (``job["lock"]``) pins it: no resolution. The build fails (LOCK_STALE) when
    the lock's inputs are not those of the wheels just built."""
    from pip._vendor.packaging.markers import Marker

    lock = job["lock"]
    found = lock_inputs(job, project_wheel, local_out)
    if found != lock["inputs"]:
        log("the lock is stale: its inputs %s, this build's %s" % (lock["inputs"], found))
        sys.exit(LOCK_STALE)
    from_source = set(lock.get("from_source") or [])
    local = [os.path.join(local_out, w) for w in os.listdir(local_out) if w.endswith(".whl")]
    for path in [project_wheel, *job.get("internal_wheels", []), *(w for w in local if name_of(w) in from_source)]:
        shutil.copy2(path, os.path.join(wheels_dir, os.path.basename(path)))
    entries = []
    for package in lock["packages"]:
        marker = package.get("marker")
        try:
            if marker and not Marker(marker).evaluate():
                continue
        except Exception as exc:  # a marker this pip cannot evaluate (a variable it does not know)
            log("cannot evaluate the marker %r of %s: %s" % (marker, package["name"], exc))
            sys.exit(LOCK_UNUSABLE)
        entries.append("%s==%s%s %s" % (package["name"], package["version"], " ; " + marker if marker else "",
                                        " ".join("--hash=sha256:" + h for h in package["hashes"])))
    log("closure: locked (%d packages, no resolution)" % len(entries))
    if entries:
        fetch_entries(entries, wheels_dir, local_out, scratch)
    with open(os.path.join(job["out"], "closure.json"), "w") as fh:
        json.dump({"closure": "locked"}, fh)


# pip does not reuse the wheels it built from sdists when it checks hashes: they are kept here, in the
# scope's pip cache (the same trust as pip's own wheel cache; --no-cache gives an empty one), by the
# sdist's pinned name, version and hashes.
def built_dir(entry):
    cache = os.environ.get("PIP_CACHE_DIR")
    if not cache:
        return None
    words = entry.split()
    hashes = sorted(w.split("=", 1)[1] for w in words if w.startswith("--hash="))
    digest = hashlib.sha256((words[0] + "\0" + " ".join(hashes)).encode()).hexdigest()[:32]
    return os.path.join(cache, "grocker-built", digest)


def take_built(entry, wheels_dir):
    where = built_dir(entry)
    wheels = [w for w in os.listdir(where) if w.endswith(".whl")] if where and os.path.isdir(where) else []
    if len(wheels) != 1:
        return False
    log("wheel of %s built before: %s" % (entry.split()[0], wheels[0]))
    shutil.copy2(os.path.join(where, wheels[0]), os.path.join(wheels_dir, wheels[0]))
    return True


def keep_wheels(entries, new_wheels):
    """Keep the new wheels: by their sha256 when fetched as the index has them, by their sdist's entry
    when pip built them (no hash of the entry matches)."""
    by_name = {}
    for entry in entries:
        name = entry.split()[0].split("==")[0]
        by_name[name.lower().replace("_", "-").replace(".", "-")] = entry
    for wheel in new_wheels:
        name = os.path.basename(wheel).split("-")[0].lower().replace("_", "-").replace(".", "-")
        entry = by_name.get(name)
        if entry is None:
            continue
        where = built_dir(entry)
        if where is None:
            continue
        with open(wheel, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        if "--hash=sha256:" + digest in entry.split():
            where = os.path.join(wheel_store(), digest)  # fetched as it is on the index
        store_file(wheel, where)


def store_file(path, where):
    """``where/<file name>``, written whole or not at all (a concurrent build may keep it first)."""
    tmp = where + ".tmp-%d" % os.getpid()
    os.makedirs(tmp, exist_ok=True)
    shutil.copy2(path, os.path.join(tmp, os.path.basename(path)))
    try:
        os.rename(tmp, where)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


# The wheels pip fetched, by their sha256, in the scope's pip cache: the next compile whose resolution
# pins one of them takes it without starting pip. Checked against its name on every read.
def wheel_store():
    return os.path.join(os.environ["PIP_CACHE_DIR"], "grocker-wheels")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_TAG_RANK: dict = {}  # tag -> its place in sys_tags()


def wheel_rank(filename):
    """The rank of the best tag of a wheel for this interpreter (lower is better; pip's order), None when
    it does not fit."""
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import InvalidWheelFilename, parse_wheel_filename

    if not _TAG_RANK:
        _TAG_RANK.update((tag, i) for i, tag in reversed(list(enumerate(sys_tags()))))
    try:
        tags = parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return None
    ranks = [_TAG_RANK[t] for t in tags if t in _TAG_RANK]
    return min(ranks) if ranks else None


def take_fetched(entry, wheels_dir):
    if not os.environ.get("PIP_CACHE_DIR"):
        return False
    found = []
    for digest in (w[len("--hash=sha256:"):] for w in entry.split() if w.startswith("--hash=sha256:")):
        where = os.path.join(wheel_store(), digest)
        for name in os.listdir(where) if os.path.isdir(where) else []:
            rank = wheel_rank(name) if name.endswith(".whl") else None
            if rank is not None:
                found.append((rank, where, name, digest))
    for _, where, name, digest in sorted(found):
        path = os.path.join(where, name)
        if sha256_file(path) == digest:
            shutil.copy2(path, os.path.join(wheels_dir, name))
            return True
        shutil.rmtree(where, ignore_errors=True)  # damaged: fetched again
    return False


def only_wheel(directory):
    wheels = [f for f in os.listdir(directory) if f.endswith(".whl")]
    if len(wheels) != 1:
        log("expected one wheel in %s, found %r" % (directory, wheels))
        sys.exit(21)
    return os.path.join(directory, wheels[0])


def wheel_info(path):
    """Name, version, top-level modules and console scripts of a wheel."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        meta = zf.read(dist_info + "/METADATA").decode("utf-8")
        fields: dict[str, str] = {}
        for line in meta.splitlines():
            if not line.strip():
                break
            if ":" in line and not line.startswith(" "):
                k, v = line.split(":", 1)
                fields.setdefault(k.strip(), v.strip())
        scripts = []
        if dist_info + "/entry_points.txt" in names:
            section = None
            for line in zf.read(dist_info + "/entry_points.txt").decode("utf-8").splitlines():
                line = line.strip()
                if line.startswith("["):
                    section = line.strip("[]")
                elif "=" in line and section == "console_scripts":
                    scripts.append(line.split("=", 1)[0].strip())
        modules: set[str] = set()
        if dist_info + "/top_level.txt" in names:
            modules.update(m.strip() for m in zf.read(dist_info + "/top_level.txt").decode().splitlines()
                           if m.strip())
        else:
            for n in names:
                top = n.split("/")[0]
                if top.endswith((".dist-info", ".data")) or top.endswith(".pth"):
                    continue
                if "/" in n or n.endswith(".py"):
                    modules.add(top[:-3] if top.endswith(".py") else top)
                elif n.endswith(".so"):
                    modules.add(top.split(".")[0])
    return {
        "name": fields.get("Name"),
        "version": fields.get("Version"),
        "modules": sorted(m for m in modules if m.isidentifier()),
        "scripts": sorted(scripts),
    }


def closure_listing(directory):
    closure = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".whl"):
            parts = name[:-4].split("-")
            closure.append({"file": name, "name": parts[0], "version": parts[1]})
    return closure


def run_tests(job, wheel, tree):
    """Install the wheel (and the internal wheels it needs) in a fresh venv and run the tests."""
    test = job["test"]
    began = time.monotonic()  # the environment and the command: what the report calls the tests' time
    log("test environment")
    requirement = wheel + ("[%s]" % ",".join(test["extras"]) if test["extras"] else "")
    env = make_env(job, env_dir(job, "grocker-testenv"),
                   [requirement] + job.get("internal_wheels", []) + test.get("requirements", []),
                   exit_code=22, what="test environment")
    log("+ " + test["command"])
    start = time.monotonic()
    proc = subprocess.run(test["command"], shell=True, cwd=tree, env=env)
    # Exit code 5: pytest (and unittest since 3.12) collected no tests. That is "no tests", not a failure.
    outcome = {0: "passed", NO_TESTS_COLLECTED: "no tests"}.get(proc.returncode, "FAILED")
    log("tests %s in %.1fs" % (outcome, time.monotonic() - start))
    if outcome == "FAILED":
        sys.exit(23)
    seconds = round(time.monotonic() - began, 2)
    with open(os.path.join(job["out"], "tests.json"), "w") as fh:
        json.dump({"tests": outcome, "test_seconds": seconds}, fh)
    return outcome


def run_build_commands(job, tree, find_links):
    """The project's ``build-commands``, in the scratch copy of its source, before its wheel is built.

    They run with a venv on PATH holding the project and its dependencies (Django's collectstatic
    imports the settings and the apps). A failing command ends the compile with exit code 25 and
    writes which command failed, and how, to ``build-command.json`` for the host's message.
    """
    commands = job.get("build_commands") or []
    if not commands:
        return
    log("build commands: environment")
    requirement = tree + ("[%s]" % ",".join(job["extras"]) if job.get("extras") else "")
    env = make_env(job, env_dir(job, "grocker-buildenv"), [requirement] + job.get("internal_wheels", []),
                   find_links=find_links, exit_code=26, what="environment of the build commands")
    for command in commands:
        log("+ " + command)
        start = time.monotonic()
        proc = subprocess.run(command, shell=True, cwd=tree, env=env)
        if proc.returncode != 0:
            log("build command failed with exit status %d: %s" % (proc.returncode, command))
            with open(os.path.join(job["out"], "build-command.json"), "w") as fh:
                json.dump({"command": command, "status": proc.returncode}, fh)
            sys.exit(25)
        log("  %.1fs" % (time.monotonic() - start))


def prepare_metadata(job):
    """The project's metadata, as pip gets it from the build backend (prepare_metadata_for_build_wheel).

    For workspace members that are not trusted to run code on the host: pip's report is
    written to the output directory, the host reads only its metadata.
    """
    tree = "/tmp/grocker-metadata"
    copy_tree(job["src"], job["files"], tree)
    log("metadata")
    pip("install", *PEP517, "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
        "--report", os.path.join(job["out"], "report.json"), tree)


def closure_metadata(path):
    """What decides a wheel's closure: its name, Requires-Dist, Provides-Extra and Requires-Python."""
    with zipfile.ZipFile(path) as zf:
        dist_info = next(n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info"))
        meta = zf.read(dist_info + "/METADATA").decode("utf-8")
    fields: dict[str, list[str]] = {"Name": [], "Requires-Dist": [], "Provides-Extra": [], "Requires-Python": []}
    for line in meta.splitlines():
        if not line.strip():
            break  # the body (long description) starts here
        if ":" in line and not line.startswith((" ", "\t")):
            k, v = line.split(":", 1)
            if k.strip() in fields:
                fields[k.strip()].append(" ".join(v.split()))
    fields["Name"] = [n.lower().replace("_", "-").replace(".", "-") for n in fields["Name"]]
    return {k: sorted(v) for k, v in fields.items()}


def reuse_closure(job, project_wheel, wheels_dir, local_out):
    """Copy the previous closure instead of resolving, when the project's metadata did not change.

    ``job["previous"]`` (set by the host when an earlier compile had the same inputs but for the
    source) names the earlier project wheel and closure, mounted read-only. The wheels of this run
    (project, internal, local packages) are never taken from it. Returns False to resolve as usual.
    """
    previous = job.get("previous")
    if not previous:
        return False

    before = {name_of(p): p for p in previous["closure"]}
    # The project's own wheel, and each internal wheel of this run (a workspace member's libraries):
    # their metadata decide the closure, so any change there means resolving again.
    fresh = [project_wheel, *job.get("internal_wheels", [])]
    for wheel, old in [(project_wheel, previous["wheel"])] + [(w, before.get(name_of(w))) for w in fresh[1:]]:
        if old is None or closure_metadata(wheel) != closure_metadata(old):
            log("closure: the metadata of %s changed, resolving again" % name_of(wheel))
            return False
    own = {name_of(w) for w in fresh}
    local = {name_of(w): os.path.join(local_out, w) for w in os.listdir(local_out) if w.endswith(".whl")}
    for name, path in before.items():
        if name in local:  # a local package is built again by this run, the previous closure needed it
            fresh.append(local[name])
        elif name not in own:
            shutil.copy2(path, wheels_dir)
    for path in fresh:
        shutil.copy2(path, wheels_dir)
    with open(os.path.join(job["out"], "closure.json"), "w") as fh:
        json.dump({"closure": "reused"}, fh)
    log("closure: reused (metadata unchanged)")
    return True


def prepared_wheel(job, tree, project_out):
    """Build the project's wheel without isolation, against the build environment the host keeps.

    ``job["build_env"]`` names it: ready (mounted read-only, made by an earlier compile with the same
    build requirements and pip configuration) or to prepare under ``/out`` (the host keeps it after
    success). Returns False, leaving nothing behind, when that fails: the isolated build then runs.
    """
    env = job.get("build_env")
    if not env:
        return False
    site = os.path.join(env["path"], "site")
    start = time.monotonic()
    if not env["ready"]:
        log("build environment: " + " ".join(env["requires"]) + " (kept for the next builds)")
        # Compiled to bytecode once here: the environment is read-only once kept, so an uncompiled one would
        # compile its build backend in memory at every build (setuptools: 0.19 s of imports instead of 0.1 s).
        if using_uv(job):
            install = [UV, "pip", "install", "--quiet", "--compile-bytecode", "--python", sys.executable,
                       *uv_index_args(), "--target", site]
        else:
            install = PIP + ["install", "--quiet", "--compile", "--target", site]
        if subprocess.run(install + list(env["requires"])).returncode != 0:
            shutil.rmtree(env["path"], ignore_errors=True)
            return False
    # The PEP 517 hook called directly, as a frontend does without isolation: no pip start-up, no separate
    # metadata step (build_hook.py). In a warm compile container, a hook that imported the backend after the
    # previous compile may be waiting: it builds, else a new one does.
    import build_hook  # beside this script

    hook_env = dict(os.environ, PYTHONPATH=site)
    code = build_hook.build_with_served(env["backend"], site, tree, project_out, hook_env) if env["ready"] else None
    log("project wheel (prepared build environment, %s%s)"
        % (env["backend"], ", backend imported beforehand" if code is not None else ""))
    if code is None:
        for name in os.listdir(project_out):  # what a hook that died left
            os.remove(os.path.join(project_out, name))
        code = subprocess.run([sys.executable, os.path.join(HERE, "build_hook.py"), env["backend"], project_out],
                              cwd=tree, env=hook_env).returncode
    if env["ready"]:
        with open(build_hook.REQUEST, "w") as fh:  # the next compile's hook, started once this one is cleaned up
            json.dump({"backend": env["backend"], "site": site}, fh)
    if code != 0 or len([f for f in os.listdir(project_out) if f.endswith(".whl")]) != 1:
        log("the prepared build environment failed; building in an isolated one")
        for name in os.listdir(project_out):
            os.remove(os.path.join(project_out, name))
        if not env["ready"]:
            shutil.rmtree(env["path"], ignore_errors=True)
        return False
    if not env["ready"]:
        open(os.path.join(env["path"], "ready"), "w").close()
    log("  %.2fs" % (time.monotonic() - start))
    return True


def project_bytecode(spec, wheel, out):
    """The bytecode of the project's own wheel, compiled here rather than in a container of its own.

    The compiler image is the root image plus packages: ``spec["interpreter"]`` is the runtime's
    interpreter (the host checks the identity ``bytecode_driver.py`` records against the root image's,
    and every file it gets, before using any; image/bytecode.py). Every ``.py`` the wheel installs below
    site-packages is staged at its path in the image and compiled by ``bytecode_driver.py --one``, a fresh
    interpreter, exactly as the bytecode container would: the same bytes. Output: ``out/bytecode/``.
    """
    start = time.monotonic()
    site = "%s/lib/python%d.%d/site-packages" % (spec["venv"], sys.version_info[0], sys.version_info[1])
    work = "/tmp/grocker-build/bytecode"
    shutil.rmtree(work, ignore_errors=True)
    files = set()
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            if not name.endswith(".py") or "" in parts or ".." in parts:
                continue
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            path = site + "/" + "/".join(parts)
            target = os.path.join(work, "src", "0", path.lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as fh:
                fh.write(zf.read(name))
            files.add(path)
    with open(os.path.join(work, "job.json"), "w") as fh:
        json.dump({"wheels": [{"id": "0", "files": sorted(files)}]}, fh)
    dest = os.path.join(out, "bytecode")
    os.makedirs(dest, exist_ok=True)
    done = subprocess.run([spec["interpreter"], "-I", "/grocker/bytecode_driver.py", os.path.join(work, "job.json"),
                           "--one", "0", "--src", os.path.join(work, "src"), "--out", dest])
    if done.returncode != 0:  # the host compiles it in the bytecode container instead
        shutil.rmtree(dest, ignore_errors=True)
    log("bytecode of the project wheel: %d modules  %.2fs" % (len(files), time.monotonic() - start))


def main():
    with open(sys.argv[1]) as fh:
        job = json.load(fh)
    if job.get("mode") == "metadata":
        prepare_metadata(job)
        return
    scratch = scratch_dir(job)
    out = job["out"]
    local_out = os.path.join(scratch, "local-wheels")
    project_out = os.path.join(scratch, "project-wheel")
    for d in (local_out, project_out):
        os.makedirs(d, exist_ok=True)
    for i, local in enumerate(job.get("local", [])):
        tree = os.path.join(scratch, "local-%d" % i)
        copy_tree(local["mount"], local["files"], tree)
        log("local package %s" % local["name"])
        build_wheel(job, tree, local_out)
    tree = os.path.join(scratch, "src")
    copy_tree(job["src"], job["files"], tree)
    if job.get("mode") == "test":
        run_tests(job, job["wheel"], tree)
        return
    for command in job.get("pre_commands", []):
        log("+ " + command)
        if subprocess.run(command, shell=True, cwd=tree).returncode != 0:
            log("plugin command failed: " + command)
            sys.exit(24)
    run_build_commands(job, tree, local_out)
    if not prepared_wheel(job, tree, project_out):
        log("project wheel")
        build_wheel(job, tree, project_out)
    project_wheel = only_wheel(project_out)
    info = wheel_info(project_wheel)
    info["wheel"] = os.path.basename(project_wheel)
    wheels_dir = os.path.join(out, "wheels")
    if job.get("mode") == "library":
        # A library: its own wheel, tested against the internal wheels of this run.
        shutil.copy2(project_wheel, os.path.join(wheels_dir, info["wheel"]))
        if job.get("test"):
            info["tests"] = run_tests(job, project_wheel, tree)
        info["closure"] = closure_listing(wheels_dir)
    elif job.get("mode") == "lock":
        requirement = project_wheel + ("[%s]" % ",".join(job["extras"]) if job["extras"] else "")
        log("locking the dependency closure of %s %s" % (info["name"], info["version"]))
        write_lock_resolution(job, requirement, project_wheel, local_out, scratch)
        info["closure"] = []
    elif job.get("lock"):
        log("dependency closure of %s %s, from the lock" % (info["name"], info["version"]))
        locked_closure(job, project_wheel, local_out, wheels_dir, scratch)
        info["closure"] = closure_listing(wheels_dir)
        log("%d wheels" % len(info["closure"]))
    elif reuse_closure(job, project_wheel, wheels_dir, local_out):
        info["closure"] = closure_listing(wheels_dir)
        log("%d wheels" % len(info["closure"]))
    else:
        requirement = project_wheel + ("[%s]" % ",".join(job["extras"]) if job["extras"] else "")
        log("dependency closure of %s %s" % (info["name"], info["version"]))
        resolve_closure(job, requirement, job.get("internal_wheels", []), local_out, wheels_dir, scratch)
        info["closure"] = closure_listing(wheels_dir)
        log("%d wheels" % len(info["closure"]))
    if job.get("bytecode"):
        project_bytecode(job["bytecode"], project_wheel, out)
    # What the runtime image's venv needs to know (this is the root image's Python).
    info["python"] = {"version": "%d.%d.%d" % sys.version_info[:3]}
    info["local"] = sorted(wheel_info(os.path.join(local_out, w))["name"] for w in os.listdir(local_out)
                           if w.endswith(".whl"))
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(info, fh, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
