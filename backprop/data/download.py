"""Fetching a data file from public mirrors, verified by SHA-256 before it gets its real name.

Each mirror is tried in turn. The download streams into a temporary file beside the target; only a
complete file whose checksum matches a known sum is renamed into place, so an interrupted or corrupt
download never leaves anything under the real name (nor, once it fails, anywhere else).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from backprop.checkpoint import atomic_write

CHUNK = 1 << 16


class DownloadError(OSError):
    """No mirror gave a file with a known checksum; the message lists every attempt."""


class ChecksumError(ValueError):
    """A downloaded file matched none of its known SHA-256 sums."""


class Digests:
    """SHA-256 of a byte stream fed in chunks and, when it is gzipped, of its decompressed bytes too."""

    def __init__(self) -> None:
        self.raw = hashlib.sha256()
        self.inflated: Any = None
        self._inflate: Any = None
        self._started = False

    def update(self, chunk: bytes) -> None:
        if not self._started and chunk:
            self._started = True
            if chunk[:2] == b"\x1f\x8b":
                self.inflated, self._inflate = hashlib.sha256(), zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.raw.update(chunk)
        while self._inflate is not None and chunk:
            try:
                self.inflated.update(self._inflate.decompress(chunk))
            except zlib.error:
                self.inflated = self._inflate = None  # not valid gzip after all: only the raw sum counts
                break
            chunk = self._inflate.unused_data  # the start of a further gzip member, if any
            if chunk:
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def hexdigests(self) -> list[str]:
        sums = [self.raw.hexdigest()]
        if self.inflated is not None and self._inflate is not None and self._inflate.eof:
            sums.append(self.inflated.hexdigest())
        return sums

    def check(self, sha256: Iterable[str]) -> str:
        """The sum that matches one of ``sha256``, else raise :class:`ChecksumError`.

        A gzipped stream matches when either its own bytes or its decompressed bytes have a known sum,
        so mirrors that recompress the same data still verify against the sums of the original.
        """
        known = {s.lower() for s in sha256}
        sums = self.hexdigests()
        for s in sums:
            if s in known:
                return s
        raise ChecksumError(f"SHA-256 {' / '.join(sums)} matches none of the known sums")


def verify(path: str | os.PathLike, sha256: Iterable[str]) -> str:
    """Check the file at ``path`` against ``sha256`` as :meth:`Digests.check` does."""
    digests = Digests()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digests.update(chunk)
    return digests.check(sha256)


def download(urls: Sequence[str], dest: str | os.PathLike, sha256: Iterable[str], *, progress: bool = True,
             timeout: float = 30.0, opener: Callable[..., Any] = urllib.request.urlopen) -> Path:
    """Fetch the first of ``urls`` that gives a verified file, and store it at ``dest``.

    ``sha256`` lists the acceptable sums (see :func:`verify`). Raises :class:`DownloadError` naming
    every URL and why it failed; then nothing is left at ``dest`` or beside it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    known = list(sha256)
    failures = []
    for url in urls:
        def fetch(f: IO[bytes], url: str = url) -> None:
            digests = Digests()
            with opener(url, timeout=timeout) as response:
                size = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
                with tqdm(total=int(size) if size else None, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=dest.name, disable=not progress, leave=False, dynamic_ncols=True) as bar:
                    for chunk in iter(lambda: response.read(CHUNK), b""):
                        f.write(chunk)
                        digests.update(chunk)
                        bar.update(len(chunk))
            digests.check(known)

        try:
            return atomic_write(dest, fetch)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, HTTPError and timeouts
            # are OSErrors; a malformed answer (bad status line, cut-off chunk) is an HTTPException
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
    raise DownloadError(f"could not download {dest.name}:\n  " + "\n  ".join(failures))
