"""Where built wheels are shared: the local store, and optionally a PyPI-compatible index.

Local: ``.grocker/wheels/NAME/KEY/wheels/FILE.whl`` under the workspace (one directory per
cache key, published by an atomic rename).

Index (for builds spread over several machines, e.g. pypiserver): after a member is built,
its wheel is uploaded under a name carrying the member's cache key as the wheel *build
tag* (``name-1.2.0-1a2b3c4d5e6f7-py3-none-any.whl``), so two builds of one version with
different content never collide, and a machine that needs exactly that build downloads it.

What grocker takes from an index (the index is trusted for what it serves, not for where it
is written nor for the transfer):

* the link is chosen by the file name of its ``href`` (PEP 503), which must be the link's
  text and name this project, this version and this cache key's build tag;
* the file is written under the name grocker computes (:func:`tagged_name`), never one the
  index chose, inside the wheel directory;
* the link must carry a ``#sha256=`` (or sha384/sha512) hash and the file must match it, and
  the wheel's RECORD, dist-info name, METADATA name/version and WHEEL build tag must agree:
  an index that gives no hash is refused (every index with an upload API grocker knows of
  gives one).

Credentials: never in a URL that is stored or printed. They come from
``$GROCKER_WORKSPACE_INDEX_URL`` (a URL with ``user:token@``, for the same host) or the netrc
file (``$NETRC``, else ``~/.netrc``), and are sent only to the index's own scheme, host and
port, never along a redirect to another one. A URL with credentials on the command line or in
a configuration file is refused.
"""
from __future__ import annotations

import base64
import email.parser
import hashlib
import html.parser
import netrc
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from setuptools_grocker.errors import WheelIndexError
from setuptools_grocker.fs import atomic_writer
from setuptools_grocker.progress import add_secret, redact

#: The environment variable of ``workspace.index-url``: the only place a URL may carry credentials.
INDEX_URL_ENV = "GROCKER_WORKSPACE_INDEX_URL"
#: Hashes a link's fragment may give; md5 and sha1 are not proof enough.
ACCEPTED_HASHES = ("sha256", "sha384", "sha512")
CREDENTIALS_HINT = f"put the credentials in {INDEX_URL_ENV} (https://user:token@host/...) or in ~/.netrc"
# A wheel's tag fields (python, abi, platform); anything else could not be a safe file name.
_TAG_FIELD = re.compile(r"^[A-Za-z0-9_.]+$")
_MAX_PAGE = 16 * 1024 * 1024
_CHUNK = 1024 * 1024


def build_tag(key: str) -> str:
    # A build tag must start with a digit (PEP 427).
    return "1" + key[:12]


def tagged_name(wheel_name: str, key: str) -> str:
    """``name-ver[-build]-py-abi-plat.whl`` -> ``name-ver-BUILD-py-abi-plat.whl`` (normalised, a safe file name)."""
    try:
        name, version, _, _ = parse_wheel_filename(wheel_name)
    except InvalidWheelFilename as exc:
        raise WheelIndexError(f"{_shown(wheel_name)} is not a wheel file name", "check the wheel") from exc
    tags = wheel_name[: -len(".whl")].split("-")[-3:]
    if not all(_TAG_FIELD.match(t) for t in tags):
        raise WheelIndexError(f"{_shown(wheel_name)} has tags that are not plain names", "check the wheel")
    return "-".join([name.replace("-", "_"), str(version), build_tag(key), *tags]) + ".whl"


# -- URLs and credentials -------------------------------------------------------------------------

def public_url(url: str) -> str:
    """``url`` without credentials, query and fragment: what grocker stores and prints."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, _hostport(parts), parts.path, "", ""))


def _hostport(parts: urllib.parse.SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host + (f":{parts.port}" if parts.port else "")


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def has_userinfo(url: str) -> bool:
    return "@" in urllib.parse.urlsplit(url).netloc


@dataclass(frozen=True)
class Credentials:
    """HTTP Basic credentials for the index; never shown (``repr`` hides them)."""

    username: str = field(repr=False)
    password: str = field(repr=False)

    def header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def _userinfo(url: str) -> Credentials:
    parts = urllib.parse.urlsplit(url)
    return Credentials(urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or ""))


def _netrc_credentials(environ: Mapping[str, str], host: str) -> Credentials | None:
    path = Path(environ.get("NETRC") or Path(environ.get("HOME") or Path.home()) / ".netrc")
    if not path.is_file():
        return None
    try:
        found = netrc.netrc(str(path)).authenticators(host)
    except netrc.NetrcParseError as exc:
        # Not the parser's message: it may quote a token of the file.
        raise WheelIndexError(f"{path} is not a valid netrc file (line {exc.lineno})",
                              "fix that line, or give the credentials in " + INDEX_URL_ENV) from None
    except OSError as exc:
        raise WheelIndexError(f"cannot read {path}: {exc.strerror}", "check its permissions") from None
    if not found:
        return None
    login, _, password = found
    return Credentials(login or "", password or "")


def open_index(url: str | None, *, environ: Mapping[str, str], configured: str | None = None,
               timeout: float = 60) -> WheelIndex | None:
    """The wheel index of a workspace build, with its credentials, or None.

    The URL is ``url`` (``--wheel-index``), else ``$GROCKER_WORKSPACE_INDEX_URL``, else
    ``configured`` (``workspace.index-url``). The first two may be public; credentials come
    from ``$GROCKER_WORKSPACE_INDEX_URL`` when it names the same scheme, host and port, else
    from the netrc file. ``url`` and ``configured`` must not carry credentials: a command line
    is visible to every user of the machine (``ps``) and in Buildbot's step logs, and a
    configuration file is committed.
    """
    from_env = environ.get(INDEX_URL_ENV) or None
    for where, value in (("--wheel-index", url), ("workspace.index-url", configured)):
        if value and has_userinfo(value):
            raise WheelIndexError(f"the wheel index URL of {where} ({redact(value)}) carries credentials, "
                                  "which would show in process lists, logs and files",
                                  f"give the URL without them, and {CREDENTIALS_HINT}")
    chosen = url or from_env or configured
    if not chosen:
        return None
    _check_index_url(chosen)
    auth = None
    if from_env and has_userinfo(from_env):
        _check_index_url(from_env)
        if _origin(from_env) == _origin(chosen):
            auth = _userinfo(from_env)
    if auth is None:
        auth = _netrc_credentials(environ, _origin(chosen)[1])
    return WheelIndex(public_url(chosen), auth=auth, timeout=timeout)


def _check_index_url(url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise WheelIndexError(f"the wheel index URL {redact(url)!r} is not a valid URL",
                              "give it as http(s)://host[:port]/path") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WheelIndexError(f"the wheel index URL {redact(url)!r} is not an http(s) URL",
                              "give it as http(s)://host[:port]/path")
    if parts.query or parts.fragment:
        raise WheelIndexError(f"the wheel index URL {redact(url)} has a query or a fragment",
                              f"give the index's base URL; {CREDENTIALS_HINT}")


# -- the index ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexedWheel:
    """A wheel the index lists for exactly the wanted build."""

    #: Where to download it (may hold a query, e.g. a signed URL; never printed).
    url: str
    #: The local file name, computed by grocker.
    filename: str
    hash_name: str
    digest: str

    @property
    def public(self) -> str:
        """The URL as stored and printed: no credentials, no query."""
        return public_url(self.url)


class _Links(html.parser.HTMLParser):
    """``(text, href)`` of every ``<a>`` of a simple page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append(("".join(self._text).strip(), self._href))
            self._href = None


class _OtherOrigin(urllib.error.URLError):
    """A redirect away from the index while reading its pages."""


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Credentials follow a redirect only to the index's own origin; pages never leave it."""

    def __init__(self, index: WheelIndex, leave_origin: bool) -> None:
        self.index = index
        self.leave_origin = leave_origin

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise WheelIndexError(f"the wheel index redirected to a {urllib.parse.urlsplit(newurl).scheme or 'bad'}: "
                                  "URL", "fix the index: it may only redirect to http(s)")
        same = _origin(newurl) == self.index.origin
        if not same and not self.leave_origin:
            raise _OtherOrigin(f"redirected to another host ({public_url(newurl)})")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and same and self.index.auth is not None:
            new.add_unredirected_header("Authorization", self.index.auth.header())
        return new


class WheelIndex:
    """A PyPI-compatible index: ``/simple/NAME/`` to read, a legacy upload endpoint to write."""

    def __init__(self, url: str, upload_url: str | None = None, timeout: float = 60,
                 auth: Credentials | None = None) -> None:
        if auth is None and has_userinfo(url):  # library callers; the CLI refuses such URLs
            auth = _userinfo(url)
        self.url = public_url(url).rstrip("/")
        if self.url.endswith("/simple"):
            self.url = self.url[: -len("/simple")]
        self.upload_url = public_url(upload_url or self.url).rstrip("/") + "/"
        self.origin = _origin(self.url)
        self.auth = auth
        self.timeout = timeout
        if auth is not None:
            add_secret(auth.password)
            add_secret(auth.header())

    def _open(self, url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None, *,
              leave_origin: bool) -> Any:
        req = urllib.request.Request(url, data=data, headers=dict(headers or {}))
        if self.auth is not None and _origin(url) == self.origin:
            # Unredirected: urllib would otherwise copy it to wherever the server redirects.
            req.add_unredirected_header("Authorization", self.auth.header())
        opener = urllib.request.build_opener(_Redirects(self, leave_origin))
        return opener.open(req, timeout=self.timeout)

    def find(self, project: str, version: str, key: str) -> IndexedWheel | None:
        """The wheel of ``project`` ``version`` built with ``key``, if the index lists it."""
        name = canonicalize_name(project)
        page_url = f"{self.url}/simple/{name}/"
        try:
            with self._open(page_url, leave_origin=False) as resp:
                page = resp.read(_MAX_PAGE).decode("utf-8", "replace")
                base = resp.geturl()
        except _OtherOrigin:
            # e.g. pypiserver's fallback for unknown names: our builds are not there, and the
            # names of internal projects are not for another host.
            return None
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise _http_error(f"the wheel index {self.url}", exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise WheelIndexError(f"the wheel index {self.url} is unreachable ({_reason(exc)})",
                                  "start it, or build without --wheel-index") from None
        parser = _Links()
        parser.feed(page)
        for text, href in parser.links:
            found = self._link(base, text, href, name, version, key)
            if found is not None:
                return found
        return None

    def _link(self, base: str, text: str, href: str, name: str, version: str, key: str) -> IndexedWheel | None:
        """The link as an :class:`IndexedWheel` when it names the wanted build; raise when it is unsafe."""
        try:
            target = urllib.parse.urljoin(base, href)
            parts = urllib.parse.urlsplit(target)
            netloc = _hostport(parts)
        except ValueError:
            target, parts, netloc = "", urllib.parse.urlsplit(""), ""
        filename = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
        if not (_names_build(text, name, version, key) or _names_build(filename, name, version, key)):
            return None
        if filename != text:
            raise WheelIndexError(f"the wheel index links {_shown(text)} to a file named {_shown(filename)}",
                                  "fix the index: a link's text must be its file name (PEP 503); nothing was "
                                  "downloaded")
        if filename != os.path.basename(filename) or "\\" in filename or filename.startswith(".") \
                or "\0" in filename:
            raise WheelIndexError(f"the wheel index lists an unsafe file name {_shown(filename)}",
                                  "fix the index; nothing was downloaded")
        if parts.scheme not in ("http", "https") or not netloc:
            raise WheelIndexError(f"the wheel index links {_shown(filename)} to a non-http(s) URL",
                                  "fix the index; nothing was downloaded")
        hash_name, _, digest = parts.fragment.partition("=")
        hash_name = hash_name.lower()
        if hash_name not in ACCEPTED_HASHES or not re.fullmatch(
                "[0-9a-fA-F]{%d}" % (2 * hashlib.new(hash_name).digest_size), digest):
            raise WheelIndexError(f"the wheel index gives no sha256 hash for {filename}",
                                  "grocker takes only wheels it can check: use an index that puts #sha256= in its "
                                  "links (pypiserver, devpi do), or build without --wheel-index")
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        return IndexedWheel(url, tagged_name(filename, key), hash_name, digest.lower())

    def download(self, wheel: IndexedWheel, dest_dir: Path, project: str, version: str, key: str) -> Path:
        """Download ``wheel`` into ``dest_dir`` under its own computed name, checked; return its path."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / wheel.filename
        if target.parent != dest_dir or wheel.filename != tagged_name(wheel.filename, key):
            raise WheelIndexError(f"refusing to write {_shown(wheel.filename)} outside {dest_dir}",
                                  "this is a bug in grocker; report it")
        digest = hashlib.new(wheel.hash_name)
        # The wheel appears under its name only once all of it is there and its hash checked.
        with atomic_writer(target) as fh:
            try:
                with self._open(wheel.url, leave_origin=True) as resp:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        digest.update(chunk)
                        fh.write(chunk)
            except urllib.error.HTTPError as exc:
                raise _http_error(f"downloading {wheel.filename} from the wheel index", exc) from None
            except (urllib.error.URLError, OSError) as exc:
                raise WheelIndexError(f"downloading {wheel.filename} from the wheel index failed "
                                      f"({_reason(exc)})", "check that the index is running") from None
            if digest.hexdigest() != wheel.digest:
                raise WheelIndexError(f"{wheel.filename} from the wheel index does not match the {wheel.hash_name} "
                                      "the index gives for it", "fix or re-upload it on the index; it was not used")
        try:
            check_wheel(target, project, version, key)
        except BaseException:
            _unlink(target)
            raise
        return target

    def upload(self, wheel: Path, key: str, project: str, version: str) -> str:
        """Upload ``wheel`` under its build-tagged name; return that name."""
        name = tagged_name(wheel.name, key)
        boundary = uuid.uuid4().hex
        fields = {":action": "file_upload", "protocol_version": "1", "name": project, "version": version,
                  "filetype": "bdist_wheel", "pyversion": wheel.name[:-4].split("-")[-3],
                  "sha256_digest": hashlib.sha256(wheel.read_bytes()).hexdigest()}
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        )
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode()
        body += wheel.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        try:
            with self._open(self.upload_url, data=body, leave_origin=False,
                            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 409:  # already there: same key, same content
                return name
            raise _http_error(f"uploading {name} to the wheel index", exc, upload=True) from None
        except (urllib.error.URLError, OSError) as exc:
            raise WheelIndexError(f"uploading {name} to the wheel index failed ({_reason(exc)})",
                                  "check that the index is running") from None
        return name


def check_wheel(path: Path, project: str, version: str, key: str) -> None:
    """The wheel's own content must be whole and be this project's build: RECORD, dist-info, METADATA, WHEEL."""
    from installer.exceptions import InstallerError
    from installer.sources import WheelFile

    try:
        with WheelFile.open(path) as source:
            source.validate_record(validate_contents=True)
            metadata = email.parser.Parser().parsestr(source.read_dist_info("METADATA"), headersonly=True)
            wheel_info = email.parser.Parser().parsestr(source.read_dist_info("WHEEL"), headersonly=True)
    except (zipfile.BadZipFile, InstallerError, ValueError, KeyError, OSError, UnicodeDecodeError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WheelIndexError(f"{path.name} from the wheel index is not a valid wheel ({_shown(why, 160)})",
                              "fix or re-upload it on the index; it was not used") from None
    try:
        same_version = Version(metadata.get("Version", "")) == Version(version)
    except InvalidVersion:
        same_version = False
    if canonicalize_name(metadata.get("Name", "")) != canonicalize_name(project) or not same_version:
        raise WheelIndexError(f"{path.name} from the wheel index holds {_shown(metadata.get('Name', '?'))} "
                              f"{_shown(metadata.get('Version', '?'))}, not {project} {version}",
                              "fix the index; it was not used")
    build = wheel_info.get("Build")
    if build is not None and build != build_tag(key):
        raise WheelIndexError(f"{path.name} from the wheel index says it is build {_shown(build)}, not "
                              f"{build_tag(key)} (this cache key)", "fix the index; it was not used")


def _names_build(text: str, name: str, version: str, key: str) -> bool:
    """Whether ``text`` (or its last path part) is a wheel file name of this exact build."""
    base = text.replace("\\", "/").rsplit("/", 1)[-1]
    try:
        dist, ver, _, _ = parse_wheel_filename(base)
    except InvalidWheelFilename:
        return False
    fields = base[: -len(".whl")].split("-")
    try:
        same_version = ver == Version(version)
    except InvalidVersion:
        return False
    return dist == name and same_version and len(fields) == 6 and fields[2] == build_tag(key)


def _http_error(what: str, exc: urllib.error.HTTPError, upload: bool = False) -> WheelIndexError:
    if exc.code in (401, 403):
        return WheelIndexError(f"{what}: the index answered HTTP {exc.code} (credentials missing or refused)",
                               CREDENTIALS_HINT + (" (and check upload permissions)" if upload else ""))
    if upload:
        return WheelIndexError(f"{what}: the index refused it (HTTP {exc.code})",
                               "check upload permissions (pypiserver: -a . -P . or an htpasswd file)")
    return WheelIndexError(f"{what} answered HTTP {exc.code}", "check the index URL and that it is running")


def _shown(text: str, limit: int = 100) -> str:
    """Index-supplied text in a one-line message: quoted, escaped, short, redacted."""
    shown = repr(redact(text))
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _reason(exc: BaseException) -> str:
    return redact(str(getattr(exc, "reason", exc)))
