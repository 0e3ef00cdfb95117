from __future__ import annotations

from pathlib import Path

from setuptools_grocker.pipeline.pipconf import forward, pip_identity, read_pip_options


def test_files_then_env_in_pip_order(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://files.example/simple\ntimeout = 10\nno-color = true\n"
                    "[wheel]\ntimeout = 20\n")
    env = {"PIP_CONFIG_FILE": str(conf), "HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path / "none"),
           "PIP_TIMEOUT": "30"}
    options = read_pip_options(env)
    # /etc/pip.conf of the machine may add options; ours must win in pip's order.
    assert options["index-url"] == "https://files.example/simple"
    assert options["timeout"] == "30"
    assert "no-color" not in options


def test_local_paths_are_mounted_and_missing_ones_dropped(tmp_path: Path) -> None:
    cert = tmp_path / "ca.pem"
    cert.write_text("x")
    index = tmp_path / "mirror" / "simple"
    index.mkdir(parents=True)
    links = tmp_path / "wheels"
    links.mkdir()
    env = {
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_CERT": str(cert),
        "PIP_EXTRA_INDEX_URL": f"file://{index} https://user:secret@private.example/simple",
        "PIP_FIND_LINKS": f"{links} {tmp_path / 'absent'}",
    }
    fwd = forward(env)
    assert fwd.env["PIP_CERT"] == str(cert)
    assert fwd.env["PIP_FIND_LINKS"] == str(links)
    assert fwd.env["PIP_EXTRA_INDEX_URL"].endswith("private.example/simple")
    mounted = {m.source for m in fwd.mounts}
    # A file:// simple index links to ../../files: its parent is mounted.
    assert mounted == {cert, index.parent, links}
    assert all(m.read_only and m.target == str(m.source) for m in fwd.mounts)
    assert len(fwd.warnings) == 1 and "absent" in fwd.warnings[0]
    assert fwd.secret_env == {"PIP_EXTRA_INDEX_URL"}


def test_project_constraints_are_added(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("packaging<30\n")
    fwd = forward({"PIP_CONFIG_FILE": "/dev/null"}, constraints)
    assert fwd.env["PIP_CONSTRAINT"] == str(constraints)
    assert [m.source for m in fwd.mounts] == [constraints]


def test_the_key_takes_the_contents_of_local_options_not_their_paths(tmp_path: Path) -> None:
    """Two machines keeping the same constraints, certificate and find-links directory at different paths
    have the same pip identity (a cache key part); a changed file or a new wheel changes it."""
    def machine(root: Path, pins: str = "attrs==23.1.0\n", wheels: tuple[str, ...] = ("a-1.0-py3-none-any.whl",)
                ) -> dict[str, str]:
        (root / "links").mkdir(parents=True)
        for name in wheels:
            (root / "links" / name).write_bytes(b"PK" + name.encode())
        (root / "constraints.txt").write_text(pins)
        (root / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
        return {"PIP_CONSTRAINT": str(root / "constraints.txt"), "PIP_CERT": str(root / "ca.pem"),
                "PIP_FIND_LINKS": str(root / "links"), "PIP_EXTRA_INDEX_URL": "https://index.example/simple",
                "PIP_DEFAULT_TIMEOUT": "60"}

    a = pip_identity(machine(tmp_path / "home" / "alice" / "ci"))
    assert pip_identity(machine(tmp_path / "srv" / "worker-2")) == a
    assert pip_identity(machine(tmp_path / "pins", pins="attrs==23.2.0\n")) != a
    assert pip_identity(machine(tmp_path / "more", wheels=("a-1.0-py3-none-any.whl", "b-2.0-py3-none-any.whl"))) != a
    other_index = {**machine(tmp_path / "index"), "PIP_EXTRA_INDEX_URL": "https://other.example/simple"}
    assert pip_identity(other_index) != a
    assert "alice" not in pip_identity(machine(tmp_path / "again" / "alice"))  # a hash, nothing of the path


def test_a_closure_reuse_does_not_count_a_local_indexs_new_uploads(tmp_path: Path) -> None:
    """The closure key's pip part: a find-links or file: index directory is a local directory, whatever it
    holds (a one-line change reuses its closure after a new upload, without reading the index); the image
    key's part still changes, and a constraints file still counts by its bytes."""
    links = tmp_path / "links"
    links.mkdir()
    (links / "a-1.0-py3-none-any.whl").write_bytes(b"PK")
    env = {"PIP_FIND_LINKS": str(links), "PIP_INDEX_URL": f"file://{links}", "PIP_CONSTRAINT": str(tmp_path / "c")}
    (tmp_path / "c").write_text("a==1.0\n")
    before, reuse = pip_identity(env), pip_identity(env, index_contents=False)
    (links / "b-2.0-py3-none-any.whl").write_bytes(b"PK")
    assert pip_identity(env) != before
    assert pip_identity(env, index_contents=False) == reuse
    (tmp_path / "c").write_text("a==1.1\n")
    assert pip_identity(env, index_contents=False) != reuse
