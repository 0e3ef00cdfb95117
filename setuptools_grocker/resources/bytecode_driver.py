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
``/out/<id>.json`` says which.

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


def compile_one(job, wheel_id):
    wheel = next(w for w in job["wheels"] if w["id"] == wheel_id)
    compiled, skipped = [], []
    for path in sorted(wheel["files"]):
        source = os.path.join("/src", wheel_id, path.lstrip("/"))
        cfile = importlib.util.cache_from_source(path)
        try:
            py_compile.compile(source, cfile=os.path.join("/out", wheel_id, cfile.lstrip("/")), dfile=path,
                               doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        except py_compile.PyCompileError:
            skipped.append(path)
            continue
        compiled.append(cfile)
    with open(os.path.join("/out", wheel_id + ".json"), "w") as fh:
        json.dump({"compiled": compiled, "skipped": skipped}, fh)


def main(argv):
    with open(argv[1]) as fh:
        job = json.load(fh)
    if len(argv) > 3 and argv[2] == "--one":
        compile_one(job, argv[3])
        return 0
    compiled = skipped = 0
    for wheel in job["wheels"]:
        subprocess.run([sys.executable, "-I", os.path.abspath(__file__), argv[1], "--one", wheel["id"]],
                       check=True)
        with open(os.path.join("/out", wheel["id"] + ".json")) as fh:
            result = json.load(fh)
        compiled, skipped = compiled + len(result["compiled"]), skipped + len(result["skipped"])
    print(f"[bytecode] Python {sys.version.split()[0]} compiled {compiled} modules of {len(job['wheels'])} "
          f"wheels ({skipped} do not compile and stay without bytecode)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
