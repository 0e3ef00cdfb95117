"""Who receives the registry credentials: the registry's origin, the token realm it names, nobody else.

Real HTTP servers on 127.0.0.1 (the registry) and 127.0.0.2 (blob storage and token service,
"another host"); see ``registry_stub``. Storage refuses any request carrying ``Authorization``,
as S3 does behind presigned URLs, so a leaked credential also breaks the transfer.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Callable, Iterator

import pytest

from setuptools_grocker.errors import RegistryError
from setuptools_grocker.registry import client as registry
from tests.unit.registry_stub import (
    TOKEN,
    Blobs,
    StubRegistry,
    StubStorage,
    StubTokenService,
    basic,
    credential_helper,
    fresh_login_state,  # noqa: F401 (a fixture, used by name)
    sha256,
)

CONFIG_BLOB = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
LAYERS = [gzip.compress(b"layer one" * 5000, mtime=0), gzip.compress(b"layer two", mtime=0)]


pytestmark = pytest.mark.usefixtures("fresh_login_state")


def docker_config(tmp_path: Path, config: dict[str, object]) -> None:
    (tmp_path / "docker" / "config.json").write_text(json.dumps(config))


def logged_in(tmp_path: Path, host: str, user: str = "ci", password: str = "pw") -> None:
    docker_config(tmp_path, {"auths": {host: {"auth": basic(user, password).split(" ", 1)[1]}}})


@pytest.fixture()
def servers() -> Iterator[Callable[..., StubRegistry]]:
    made: list[object] = []

    def make(**kwargs: object) -> StubRegistry:
        reg = StubRegistry(**kwargs)  # type: ignore[arg-type]
        made.append(reg)
        return reg

    yield make
    for server in made:
        server.close()  # type: ignore[attr-defined]


@pytest.fixture()
def storage() -> Iterator[StubStorage]:
    s = StubStorage(Blobs())
    yield s
    s.close()


@pytest.fixture()
def token_service() -> Iterator[StubTokenService]:
    s = StubTokenService(("ci", "pw"))
    yield s
    s.close()


def push_and_read_back(reg: StubRegistry) -> None:
    """The whole client surface: blob push (upload), manifest PUT, digest, blob reads, document, retag."""
    ref = f"{reg.host}/shop/till:1.0"
    layers = [(sha256(blob), blob) for blob in LAYERS]
    digest, uploaded = registry.push_image(ref, [f"{reg.host}/shop/till:latest"], CONFIG_BLOB, layers)
    assert uploaded == len(CONFIG_BLOB) + sum(len(b) for b in LAYERS)
    assert registry.digest_of(ref) == digest
    for layer_digest, blob in layers:
        assert registry.get_blob(ref, layer_digest) == blob
    # Pushed again: every blob is found (HEAD through the redirect), nothing uploaded.
    assert registry.push_image(ref, [], CONFIG_BLOB, layers) == (digest, 0)
    assert registry.retag(f"{reg.host}/shop/till@{digest}", f"{reg.host}/shop/till:r1") == digest
    document_digest = registry.push_document(f"{reg.host}/shop/release:r1", "release.json", {"release": "r1"})
    assert registry.read_document(f"{reg.host}/shop/release:r1") == {"release": "r1"}
    assert registry.digest_of(f"{reg.host}/shop/release:r1") == document_digest


def test_basic_login_never_follows_blob_redirects_to_storage(tmp_path: Path, servers: Callable[..., StubRegistry],
                                                             storage: StubStorage) -> None:
    reg = servers(auth="basic", storage=storage)
    logged_in(tmp_path, reg.host)
    push_and_read_back(reg)
    # Storage got the blob reads (GET and HEAD, redirected) and the uploads (Location), none with a credential.
    assert {s.method for s in storage.seen} == {"GET", "HEAD", "PUT"}
    assert [s for s in storage.seen if s.authorization] == []
    # The registry got the login once it asked for it, and from then on without asking again.
    assert {s.authorization for s in reg.seen} == {"", basic("ci", "pw")}
    assert sum(1 for s in reg.seen if not s.authorization) == 1


def test_bearer_token_goes_to_the_registry_only_and_the_login_to_the_realm_only(
        tmp_path: Path, servers: Callable[..., StubRegistry], storage: StubStorage,
        token_service: StubTokenService) -> None:
    reg = servers(auth="bearer", storage=storage, token_service=token_service)
    logged_in(tmp_path, reg.host)
    push_and_read_back(reg)
    # The realm the registry's challenge names (another host) got the login, and only the login.
    assert token_service.seen and {s.authorization for s in token_service.seen} == {basic("ci", "pw")}
    # The registry never saw the password, only the token.
    assert {s.authorization for s in reg.seen} == {"", f"Bearer {TOKEN}"}
    assert storage.seen and [s for s in storage.seen if s.authorization] == []


def test_a_storage_host_asking_for_a_login_gets_none(tmp_path: Path, servers: Callable[..., StubRegistry],
                                                     storage: StubStorage, token_service: StubTokenService) -> None:
    reg = servers(auth="basic", storage=storage)
    logged_in(tmp_path, reg.host)
    layer = LAYERS[1]
    reg.store.blobs[sha256(layer)] = layer
    # The storage host answers the redirected request with its own challenge, naming a realm of its choice.
    storage.challenge = f'Bearer realm="{token_service.url}/token",service="fishing"'
    with pytest.raises(RegistryError) as caught:
        registry.get_blob(f"{reg.host}/shop/till:1.0", sha256(layer))
    assert token_service.seen == []
    assert [s for s in storage.seen if s.authorization] == []
    message = caught.value.message
    assert f"HTTP 401, redirected to {storage.url}" in message
    assert "s3cr3t" not in message  # a presigned URL's query is never shown


def test_an_upload_location_on_another_host_gets_no_credential(tmp_path: Path, servers: Callable[..., StubRegistry],
                                                                storage: StubStorage) -> None:
    reg = servers(auth="basic", storage=storage)
    logged_in(tmp_path, reg.host)
    digest = registry.upload_blob(f"{reg.host}/shop/till:1.0", LAYERS[0])
    assert reg.store.blobs[digest] == LAYERS[0]
    (put,) = [s for s in storage.seen if s.method == "PUT"]
    assert put.path.startswith("/upload/") and put.authorization == ""


def test_a_redirect_to_a_file_url_is_not_followed(tmp_path: Path, servers: Callable[..., StubRegistry]) -> None:
    reg = servers()
    reg.store.blobs[sha256(b"x")] = b"x"
    reg.blob_location = "file:///etc/hostname"
    with pytest.raises(RegistryError, match="'file:' URL; only HTTP"):
        registry.get_blob(f"{reg.host}/shop/till:1.0", sha256(b"x"))


def test_a_credential_is_bound_to_one_scheme_host_and_port() -> None:
    cred = registry._Credential("Basic c2VjcmV0", registry._origin("https://registry.example:443/"))
    assert registry._authorization_for("https://registry.example/v2/x/blobs/sha256:1", cred) == {
        "Authorization": "Basic c2VjcmV0"}
    assert registry._authorization_for("https://REGISTRY.example:443/v2/", cred) != {}
    for elsewhere in ("http://registry.example/v2/",  # downgrade to plain HTTP
                      "https://registry.example:5000/v2/",  # another port
                      "https://storage.example/blob?X-Amz-Signature=1",  # another host
                      "https://registry.example.evil.example/v2/",
                      "https://registry.example:bad/v2/"):
        assert registry._authorization_for(elsewhere, cred) == {}, elsewhere


def test_a_registry_asking_for_a_login_nobody_gave_says_docker_login(servers: Callable[..., StubRegistry]) -> None:
    reg = servers(auth="basic")
    with pytest.raises(RegistryError) as caught:
        registry.upload_blob(f"{reg.host}/shop/till:1.0", b"data")
    assert "asks for a login and the Docker client config has none" in caught.value.message
    assert f"docker login {reg.host}" in (caught.value.hint or "")


def test_a_wrong_password_is_sent_once_and_reported(tmp_path: Path, servers: Callable[..., StubRegistry]) -> None:
    reg = servers(auth="basic")
    logged_in(tmp_path, reg.host, password="wrong")
    with pytest.raises(RegistryError, match="HTTP 401"):
        registry.upload_blob(f"{reg.host}/shop/till:1.0", b"data")
    assert [s.authorization for s in reg.seen] == ["", basic("ci", "wrong")]


def test_a_registry_that_asks_nothing_receives_nothing(tmp_path: Path, servers: Callable[..., StubRegistry]) -> None:
    reg = servers()
    logged_in(tmp_path, reg.host)
    push_and_read_back(reg)
    assert {s.authorization for s in reg.seen} == {""}


# -- docker login credential helpers ---------------------------------------------------------------

@pytest.mark.parametrize("where", ["credsStore", "credHelpers"])
def test_credentials_from_a_docker_credential_helper(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     servers: Callable[..., StubRegistry],
                                                     storage: StubStorage) -> None:
    reg = servers(auth="basic", login=("helper-user", "helper-pw"), storage=storage)
    log = credential_helper(tmp_path, monkeypatch, reg.host)
    # What `docker login` leaves with a helper: an empty auths entry, the secret in the helper.
    config: dict[str, object] = {"auths": {reg.host: {}}}
    config.update({"credsStore": "grockertest"} if where == "credsStore" else
                  {"credHelpers": {reg.host: "grockertest"}})
    docker_config(tmp_path, config)
    push_and_read_back(reg)
    assert basic("helper-user", "helper-pw") in {s.authorization for s in reg.seen}
    assert [s for s in storage.seen if s.authorization] == []
    # Asked once for this process, for this registry.
    assert log.read_text().splitlines() == [f"get {reg.host}"]


def test_an_identity_token_from_a_helper_is_exchanged_at_the_realm_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: Callable[..., StubRegistry],
        storage: StubStorage) -> None:
    realm = StubTokenService(("nobody", "-"), refresh_token="refresh-s3cret")
    try:
        reg = servers(auth="bearer", storage=storage, token_service=realm)
        # A helper answering the user name "<token>" holds an OAuth refresh token, not a password.
        credential_helper(tmp_path, monkeypatch, reg.host, username="<token>", secret="refresh-s3cret")
        docker_config(tmp_path, {"credsStore": "grockertest"})
        push_and_read_back(reg)
    finally:
        realm.close()
    assert realm.forms and all(form["refresh_token"] == "refresh-s3cret" for form in realm.forms)
    assert {s.authorization for s in reg.seen} == {"", f"Bearer {TOKEN}"}
    assert [s for s in storage.seen if s.authorization] == []


def test_a_missing_credential_helper_is_a_clear_error(tmp_path: Path, servers: Callable[..., StubRegistry]) -> None:
    reg = servers(auth="basic")
    docker_config(tmp_path, {"credsStore": "grocker-not-installed"})
    with pytest.raises(RegistryError) as caught:
        registry.upload_blob(f"{reg.host}/shop/till:1.0", b"data")
    assert "docker-credential-grocker-not-installed" in caught.value.message
    assert "not on PATH" in caught.value.message


def test_a_helper_is_not_run_for_a_registry_that_asks_no_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               servers: Callable[..., StubRegistry]) -> None:
    reg = servers()
    log = credential_helper(tmp_path, monkeypatch, reg.host)
    docker_config(tmp_path, {"credsStore": "grockertest"})
    push_and_read_back(reg)
    assert not log.exists()
