"""Runs inside the compiler container: build the wheels of a project and its closure.

Invoked as ``python compile_driver.py /job/job.json`` by setuptools-grocker. Only the
standard library and pip are used. The source trees are mounted read-only; each is copied
(only the files the host listed) to a scratch directory, so in-tree builds work and build
outputs never reach the host's source tree.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

PIP = [sys.executable, "-m", "pip"]
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


def pip(*args):
    cmd = PIP + list(args)
    log("+ pip " + " ".join(args))
    start = time.monotonic()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        log("pip failed with exit code %d" % proc.returncode)
        sys.exit(20)
    log("  %.1fs" % (time.monotonic() - start))


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
    env_dir = "/tmp/grocker-testenv"
    log("test environment")
    subprocess.run([sys.executable, "-m", "venv", env_dir], check=True)
    python = os.path.join(env_dir, "bin", "python")
    requirement = wheel + ("[%s]" % ",".join(test["extras"]) if test["extras"] else "")
    args = [python, "-m", "pip", "install", "--disable-pip-version-check", requirement]
    args += job.get("internal_wheels", []) + test.get("requirements", [])
    log("+ pip install " + " ".join(args[5:]))
    if subprocess.run(args).returncode != 0:
        log("installing the test environment failed")
        sys.exit(22)
    env = dict(os.environ, PATH=os.path.join(env_dir, "bin") + ":" + os.environ.get("PATH", ""),
               VIRTUAL_ENV=env_dir)
    log("+ " + test["command"])
    start = time.monotonic()
    proc = subprocess.run(test["command"], shell=True, cwd=tree, env=env)
    # Exit code 5: pytest (and unittest since 3.12) collected no tests. That is "no tests", not a failure.
    outcome = {0: "passed", NO_TESTS_COLLECTED: "no tests"}.get(proc.returncode, "FAILED")
    log("tests %s in %.1fs" % (outcome, time.monotonic() - start))
    if outcome == "FAILED":
        sys.exit(23)
    with open(os.path.join(job["out"], "tests.json"), "w") as fh:
        json.dump({"tests": outcome}, fh)
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
    env_dir = "/tmp/grocker-buildenv"
    log("build commands: environment")
    subprocess.run([sys.executable, "-m", "venv", env_dir], check=True)
    requirement = tree + ("[%s]" % ",".join(job["extras"]) if job.get("extras") else "")
    args = [os.path.join(env_dir, "bin", "python"), "-m", "pip", "install", "--disable-pip-version-check",
            *PEP517, "--find-links", find_links, requirement] + job.get("internal_wheels", [])
    log("+ pip install " + " ".join(args[5:]))
    start = time.monotonic()
    if subprocess.run(args).returncode != 0:
        log("installing the environment of the build commands failed")
        sys.exit(26)
    log("  %.1fs" % (time.monotonic() - start))
    env = dict(os.environ, PATH=os.path.join(env_dir, "bin") + ":" + os.environ.get("PATH", ""),
               VIRTUAL_ENV=env_dir)
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

    def name_of(path):  # a wheel file's normalized project name
        return os.path.basename(path).split("-")[0].lower().replace("_", "-").replace(".", "-")

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


BUILD_WHEEL = """
import importlib, sys
module, _, obj = sys.argv[1].partition(":")
backend = importlib.import_module(module)
for attr in filter(None, obj.split(".")):
    backend = getattr(backend, attr)
backend.build_wheel(sys.argv[2])
"""


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
        if subprocess.run(PIP + ["install", "--quiet", "--target", site, *env["requires"]]).returncode != 0:
            shutil.rmtree(env["path"], ignore_errors=True)
            return False
    log("project wheel (prepared build environment, %s)" % env["backend"])
    # The PEP 517 hook called directly, as a frontend does without isolation: no pip start-up, no separate
    # metadata step. Run as a script of its own directory, so the source tree (the working directory) is
    # not put on sys.path.
    hook = "/tmp/grocker-hook/build_wheel.py"
    os.makedirs(os.path.dirname(hook), exist_ok=True)
    with open(hook, "w") as fh:
        fh.write(BUILD_WHEEL)
    proc = subprocess.run([sys.executable, hook, env["backend"], project_out], cwd=tree,
                          env=dict(os.environ, PYTHONPATH=site))
    if proc.returncode != 0 or len([f for f in os.listdir(project_out) if f.endswith(".whl")]) != 1:
        log("the prepared build environment failed; building in an isolated one")
        for name in os.listdir(project_out):
            os.remove(os.path.join(project_out, name))
        if not env["ready"]:
            shutil.rmtree(env["path"], ignore_errors=True)
        return False
    if not env["ready"]:
        open(os.path.join(env["path"], "ready"), "w").close()
    log("  %.1fs" % (time.monotonic() - start))
    return True


def main():
    with open(sys.argv[1]) as fh:
        job = json.load(fh)
    if job.get("mode") == "metadata":
        prepare_metadata(job)
        return
    scratch = "/tmp/grocker-build"
    out = job["out"]
    local_out = os.path.join(scratch, "local-wheels")
    project_out = os.path.join(scratch, "project-wheel")
    for d in (local_out, project_out):
        os.makedirs(d, exist_ok=True)
    for i, local in enumerate(job.get("local", [])):
        tree = os.path.join(scratch, "local-%d" % i)
        copy_tree(local["mount"], local["files"], tree)
        log("local package %s" % local["name"])
        pip("wheel", *PEP517, "--no-deps", "--wheel-dir", local_out, tree)
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
        pip("wheel", *PEP517, "--no-deps", "--wheel-dir", project_out, tree)
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
    elif reuse_closure(job, project_wheel, wheels_dir, local_out):
        info["closure"] = closure_listing(wheels_dir)
        log("%d wheels" % len(info["closure"]))
    else:
        requirement = project_wheel + ("[%s]" % ",".join(job["extras"]) if job["extras"] else "")
        log("dependency closure of %s %s" % (info["name"], info["version"]))
        args = ["wheel", *PEP517, "--wheel-dir", wheels_dir, "--find-links", local_out]
        # Internal dependencies are given as files: they come from this run, never from an index.
        pip(*(args + [requirement] + job.get("internal_wheels", [])))
        info["closure"] = closure_listing(wheels_dir)
        log("%d wheels" % len(info["closure"]))
    # What the runtime image's venv needs to know (this is the root image's Python).
    info["python"] = {"version": "%d.%d.%d" % sys.version_info[:3]}
    info["local"] = sorted(wheel_info(os.path.join(local_out, w))["name"] for w in os.listdir(local_out)
                           if w.endswith(".whl"))
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(info, fh, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
