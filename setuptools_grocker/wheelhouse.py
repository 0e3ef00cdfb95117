"""Where built wheels are shared: the local store, and optionally a PyPI-compatible index.

Local: ``.grocker/wheels/NAME/KEY/wheels/FILE.whl`` under the workspace (one directory per
cache key, published by an atomic rename).

Index (for builds spread over several machines, e.g. pypiserver): after a member is built,
its wheel is uploaded under a name carrying the member's cache key as the wheel *build
tag* (``name-1.2.0-1a2b3c4d5e6f7-py3-none-any.whl``), so two builds of one version with
different content never collide, and a machine that needs exactly that build downloads it
by file name. Credentials embedded in the URL are used, never printed.
"""
from __future__ import annotations

import base64
import html.parser
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from setuptools_grocker.errors import WheelIndexError
from setuptools_grocker.progress import redact


def build_tag(key: str) -> str:
    # A build tag must start with a digit (PEP 427).
    return "1" + key[:12]


def tagged_name(wheel_name: str, key: str) -> str:
    """``name-ver-tags.whl`` -> ``name-ver-BUILD-tags.whl`` (replacing any build tag)."""
    parts = wheel_name[:-4].split("-")
    name, version, tags = parts[0], parts[1], parts[-3:]
    return "-".join([name, version, build_tag(key), *tags]) + ".whl"


def _prefix(project: str, version: str, key: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', project).lower()}-{version}-{build_tag(key)}-"


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.links.append((data.strip(), self._href))
            self._href = None


class WheelIndex:
    """A PyPI-compatible index: ``/simple/NAME/`` to read, a legacy upload endpoint to write."""

    def __init__(self, url: str, upload_url: str | None = None, timeout: float = 60) -> None:
        self.url = url.rstrip("/")
        if self.url.endswith("/simple"):
            self.url = self.url[: -len("/simple")]
        self.upload_url = (upload_url or self.url).rstrip("/") + "/"
        self.timeout = timeout

    def _request(self, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
        parsed = urllib.parse.urlsplit(url)
        headers = dict(headers or {})
        if parsed.username:
            token = f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
            netloc = parsed.hostname or ""
            if parsed.port:
                netloc += f":{parsed.port}"
            url = urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
        req = urllib.request.Request(url, data=data, headers=headers)
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return bytes(resp.read())

    def find(self, project: str, version: str, key: str) -> str | None:
        """The URL of the wheel of ``project`` built with ``key``, if the index has it."""
        name = re.sub(r"[-_.]+", "-", project).lower()
        try:
            page = self._request(f"{self.url}/simple/{name}/").decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise WheelIndexError(f"the wheel index {redact(self.url)} answered HTTP {exc.code}",
                                  "check the index URL and that it is running") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise WheelIndexError(f"the wheel index {redact(self.url)} is unreachable ({_reason(exc)})",
                                  "start it, or build without --wheel-index") from exc
        parser = _Links()
        parser.feed(page)
        prefix = _prefix(project, version, key)
        for text, href in parser.links:
            if text.lower().startswith(prefix) and text.endswith(".whl"):
                return urllib.parse.urljoin(f"{self.url}/simple/{name}/", href.split("#", 1)[0])
        return None

    def download(self, url: str, dest_dir: Path) -> Path:
        """Download a wheel into ``dest_dir`` atomically; return its path."""
        name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
        dest_dir.mkdir(parents=True, exist_ok=True)
        try:
            data = self._request(url)
        except (urllib.error.URLError, OSError) as exc:
            raise WheelIndexError(f"downloading {name} from the wheel index failed ({_reason(exc)})",
                                  "check that the index is running") from exc
        fd, tmp = tempfile.mkstemp(prefix=".dl-", dir=dest_dir)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest_dir / name)
        return dest_dir / name

    def upload(self, wheel: Path, key: str, project: str, version: str) -> str:
        """Upload ``wheel`` under its build-tagged name; return that name."""
        name = tagged_name(wheel.name, key)
        boundary = uuid.uuid4().hex
        fields = {":action": "file_upload", "protocol_version": "1", "name": project, "version": version,
                  "filetype": "bdist_wheel", "pyversion": wheel.name[:-4].split("-")[-3]}
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        )
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode()
        body += wheel.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        try:
            self._request(self.upload_url, data=body,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        except urllib.error.HTTPError as exc:
            if exc.code == 409:  # already there: same key, same content
                return name
            raise WheelIndexError(f"the wheel index refused {name} (HTTP {exc.code})",
                                  "check upload permissions (pypiserver: -a . -P . or credentials in the URL)") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise WheelIndexError(f"uploading {name} to the wheel index failed ({_reason(exc)})",
                                  "check that the index is running") from exc
        return name


def _reason(exc: BaseException) -> str:
    return redact(str(getattr(exc, "reason", exc)))
