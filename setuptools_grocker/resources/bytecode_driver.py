"""Runs inside a container of the root image: compile the wheels' modules to bytecode.

Invoked as ``python3 -I bytecode_driver.py /job/job.json`` by setuptools-grocker
(image/bytecode.py), with the image's own interpreter, so the magic number and the cache tag
are the image's. Standard library only.

``job.json`` lists wheels: ``{"wheels": [{"id": "0", "files": ["/opt/app/venv/.../m.py", ...]}]}``.
The source of ``/abs/path.py`` of wheel ``id`` is read from ``/src/<id>/abs/path.py`` (read-only);
its bytecode is written to ``/out/<id>/`` + ``importlib.util.cache_from_source("/abs/path.py")``,
compiled with the final path as the file name (tracebacks show where the module is in the image)
and ``UNCHECKED_HASH`` (no mtime in the file: the same source gives the same bytes). A module
that does not compile (a Python 2 file in a test directory, say) gets no bytecode, as with pip;
``/out/<id>.json`` says which, and which interpreter compiled (its ``sys.version``, magic number and cache
tag: the host records the root image's, and checks the compile container's against it).

``--src DIR --out DIR`` replace ``/src`` and ``/out``: the compile container (compile_driver.py) runs
``--one`` for the project's own wheel with its scratch directories.

Each wheel is compiled by a fresh interpreter of its own: marshal's output depends a little on
what else the process holds (reference flags), so a wheel compiled alone or next to others gives
the same bytes.
"""
import importlib.util
import json
import os
import py_compile
import subprocess
import sys

SRC, OUT = "/src", "/out"


def interpreter():
    """What decides the bytes of the bytecode: the interpreter's version, magic number and cache tag."""
    return {"version": sys.version, "magic": importlib.util.MAGIC_NUMBER.hex(),
            "tag": sys.implementation.cache_tag}


def compile_one(job, wheel_id):
    wheel = next(w for w in job["wheels"] if w["id"] == wheel_id)
    compiled, skipped = [], []
    for path in sorted(wheel["files"]):
        source = os.path.join(SRC, wheel_id, path.lstrip("/"))
        cfile = importlib.util.cache_from_source(path)
        try:
            py_compile.compile(source, cfile=os.path.join(OUT, wheel_id, cfile.lstrip("/")), dfile=path,
                               doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        except py_compile.PyCompileError:
            skipped.append(path)
            continue
        compiled.append(cfile)
    with open(os.path.join(OUT, wheel_id + ".json"), "w") as fh:
        json.dump({"compiled": compiled, "skipped": skipped, "interpreter": interpreter()}, fh)


def main(argv):
    global SRC, OUT
    args = argv[2:]
    one = None
    while args:
        option, value, args = args[0], args[1], args[2:]
        if option == "--one":
            one = value
        elif option == "--src":
            SRC = value
        elif option == "--out":
            OUT = value
    with open(argv[1]) as fh:
        job = json.load(fh)
    if one is not None:
        compile_one(job, one)
        return 0
    compiled = skipped = 0
    for wheel in job["wheels"]:
        subprocess.run([sys.executable, "-I", os.path.abspath(__file__), argv[1], "--one", wheel["id"],
                        "--src", SRC, "--out", OUT], check=True)
        with open(os.path.join(OUT, wheel["id"] + ".json")) as fh:
            result = json.load(fh)
        compiled, skipped = compiled + len(result["compiled"]), skipped + len(result["skipped"])
    print(f"[bytecode] Python {sys.version.split()[0]} compiled {compiled} modules of {len(job['wheels'])} "
          f"wheels ({skipped} do not compile and stay without bytecode)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
