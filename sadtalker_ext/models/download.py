"""Resumable, verified download of one model file (standard library only).

:func:`download` streams the file to ``<dest_dir>/<name>.part``, resumes an interrupted transfer
with an HTTP ``Range`` request, checks the size and the sha256 when the registry knows them, and only
then renames the file to its final name with :func:`os.replace` (atomic on one file system). So a
file at the final name written by this module is always complete and verified; an interrupted or
rejected download leaves at most ``<name>.part`` (kept for resuming after a network failure, removed
after a size or hash mismatch).

Downloads happen only when the user asks for them (``models download`` or the WebUI button);
nothing in the generation path touches the network.

Behaviour by server response:

* ``206 Partial Content`` to a ``Range`` request: the bytes are appended to the ``.part`` file (the
  ``Content-Range`` start must equal the bytes already there, else the download restarts).
* ``200 OK`` to a ``Range`` request (the server ignores ``Range``): the ``.part`` file is truncated
  and the whole file is written again.
* ``416 Range Not Satisfiable``: the ``.part`` file is kept if it already has the full size, else
  it is dropped and the download restarts.
* A connection that breaks after some bytes arrived is retried (resumed) up to ``retries`` times;
  a connection that fails before any byte arrived moves on to the next mirror URL.
* When every URL fails, :class:`~sadtalker_ext.errors.DownloadError` says in one line why, which
  URL to download by hand and which folder to put the file in.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

from .. import __version__
from ..errors import DownloadError
from . import locate
from .registry import ModelFile

ProgressFn = Callable[[int, Optional[int]], None]
PathArg = Union[str, "os.PathLike[str]"]

USER_AGENT = f"sd-talking-head/{__version__} (+model downloader; python-urllib)"
PART_SUFFIX = ".part"


def sha256_file(path: PathArg, chunk_size: int = 1 << 20) -> str:
    """Lower-case hex sha256 of the file at ``path`` (read in ``chunk_size`` blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_size)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def check_file(path: PathArg, spec: ModelFile, *, check_hash: bool = True) -> Optional[str]:
    """Compare a file with its registry entry.

    Returns:
        ``None`` when the file exists, has ``spec.size`` bytes (if known) and, with
        ``check_hash``, the sha256 ``spec.sha256`` (if known); otherwise a short description of the
        first problem found (``"missing"``, ``"size 12 bytes, expected 34"``, ``"sha256 ab.., expected cd.."``).
    """
    p = Path(path)
    if not p.is_file():
        return "missing"
    size = p.stat().st_size
    if spec.size is not None and size != spec.size:
        return f"size {size} bytes, expected {spec.size}"
    if check_hash and spec.sha256 is not None:
        digest = sha256_file(p)
        if digest != spec.sha256.lower():
            return f"sha256 {digest[:12]}.., expected {spec.sha256.lower()[:12]}.."
    return None


class _Mismatch(Exception):
    """The bytes are not the registered file (size or hash); the .part file must go."""


class _Restart(Exception):
    """The server cannot continue the .part file; start again from byte 0."""


class _Incomplete(Exception):
    """The connection ended before the announced length arrived (resumable)."""


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_CONTENT_RANGE_UNSAT = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)


def _part_size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


def _fetch_once(url: str, part: Path, spec: ModelFile, progress: Optional[ProgressFn],
                timeout: float, chunk_size: int) -> None:
    """One HTTP request: continue (or restart) ``part`` from ``url`` until the body ends."""
    existing = _part_size(part)
    if spec.size is not None and existing > spec.size:
        part.unlink()
        existing = 0
    if spec.size is not None and existing == spec.size:
        if progress is not None:
            progress(existing, spec.size)
        return
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if existing:
        headers["Range"] = f"bytes={existing}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and existing:
            m = _CONTENT_RANGE_UNSAT.search(err.headers.get("Content-Range", "") or "")
            err.close()
            if m and int(m.group(1)) == existing:
                return  # the .part file already holds the whole file
            raise _Restart("server refused to resume") from None
        raise
    with response:
        code = response.getcode()
        length = response.headers.get("Content-Length")
        if code == 206:
            m = _CONTENT_RANGE.search(response.headers.get("Content-Range", "") or "")
            if not m or int(m.group(1)) != existing:
                raise _Restart("server resumed at the wrong offset")
            done = existing
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        else:  # 200: a fresh copy (the server ignored Range, or there was nothing to resume)
            done = 0
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        if total is None:
            total = spec.size
        if spec.size is not None and total != spec.size:
            raise _Mismatch(f"server announces {total} bytes, expected {spec.size}")
        with open(part, mode) as f:
            if progress is not None:
                progress(done, total)
            while True:
                block = response.read(chunk_size)
                if not block:
                    break
                f.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
            f.flush()
            os.fsync(f.fileno())
        if total is not None and done < total:
            raise _Incomplete(f"connection closed after {done} of {total} bytes")


def _retryable_http(err: urllib.error.HTTPError) -> bool:
    return err.code in (408, 425, 429) or err.code >= 500


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        reason = err.reason
        return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    return f"{type(err).__name__}: {err}" if not isinstance(err, (_Mismatch, _Incomplete, _Restart)) \
        else str(err)


def manual_hint(spec: ModelFile, dest_dir: PathArg) -> str:
    """One sentence telling the user where to get ``spec`` by hand and where to put it."""
    source = spec.urls[0] if spec.urls else (spec.page or "its official release page")
    text = f"Download it by hand from {source} and put it in {Path(dest_dir)}"
    if spec.page and spec.page != source:
        text += f" (see also {spec.page})"
    return text + "."


def download(spec: ModelFile, dest_dir: PathArg, progress: Optional[ProgressFn] = None,
             timeout: float = 30.0, *, retries: int = 3, chunk_size: int = 1 << 20,
             urls: Optional[Sequence[str]] = None, verify_existing: bool = True,
             retry_delay: float = 0.5) -> Path:
    """Download ``spec`` into ``dest_dir``, verified, and return the final path.

    Args:
        spec: the registry entry (``name``, ``urls``, ``size``, ``sha256``).
        dest_dir: target folder (created if needed). The file ends up as ``dest_dir/spec.name``.
        progress: called as ``progress(done_bytes, total_bytes)`` after each block; ``done`` never
            decreases within one request and the last call of a successful download has
            ``done == total``. ``total`` is ``None`` when neither the server nor the registry
            gives a size. Exceptions it raises (e.g. a user interrupt) propagate, keeping ``.part``.
        timeout: seconds allowed for connecting and for each read (socket timeout).
        retries: how many times a transfer that broke after making progress is resumed, per URL.
        chunk_size: bytes per read / write.
        urls: mirror URLs to try in order instead of ``spec.urls``.
        verify_existing: when the final file already exists, check its size and sha256 and return
            it without any network access if they match (otherwise it is downloaded again and
            replaced only after the new copy is verified).
        retry_delay: seconds to wait before resuming (multiplied by the attempt number).

    Returns:
        ``Path`` of the verified file.

    Raises:
        DownloadError: every URL failed (offline, HTTP error, size or sha256 mismatch). The message
            is one line: the reason, the URL to download by hand and the folder to put the file in.
            A rejected (mismatching) ``.part`` file is removed; a ``.part`` file from a broken
            connection is kept so that the next call resumes it.
    """
    dest = Path(dest_dir)
    final = dest / spec.name
    part = dest / (spec.name + PART_SUFFIX)
    if verify_existing and final.is_file() and check_file(final, spec) is None:
        if progress is not None:
            size = final.stat().st_size
            progress(size, size)
        return final
    candidates = list(spec.urls if urls is None else urls)
    if not candidates:
        raise DownloadError(f"No download URL is known for {spec.name}. {manual_hint(spec, dest)}")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"Cannot create the folder {dest} for {spec.name} ({err.strerror}); "
                            "choose another folder with --checkpoints DIR.") from None

    last_error: Optional[BaseException] = None
    for url in candidates:
        attempt = 0
        fetched = False
        while True:
            before = _part_size(part)
            try:
                _fetch_once(url, part, spec, progress, timeout, chunk_size)
                fetched = True
                break
            except _Mismatch as err:
                last_error = err
                part.unlink(missing_ok=True)
                break
            except _Restart as err:
                last_error = err
                part.unlink(missing_ok=True)
            except urllib.error.HTTPError as err:
                last_error = err
                if not _retryable_http(err):
                    break
            except (_Incomplete, urllib.error.URLError, http.client.HTTPException, OSError) as err:
                last_error = err
            attempt += 1
            progressed = _part_size(part) > before or isinstance(last_error, _Restart)
            if attempt > retries or not progressed:
                break
            time.sleep(retry_delay * attempt)
        if not fetched:
            continue
        problem = check_file(part, spec)
        if problem is not None:
            part.unlink(missing_ok=True)
            last_error = _Mismatch(f"downloaded file rejected: {problem}")
            continue
        os.replace(part, final)
        return final

    reason = _describe(last_error) if last_error is not None else "no URL worked"
    raise DownloadError(f"Could not download {spec.name} ({reason}). {manual_hint(spec, dest)}")


def download_missing(specs: Sequence[ModelFile], dirs: Sequence[Path], dest_dir: PathArg, *,
                     progress_for: Optional[Callable[[ModelFile], Optional[ProgressFn]]] = None,
                     timeout: float = 30.0, report: Optional[Callable[[ModelFile, str, Any], None]] = None,
                     keep_going: bool = False) -> List[Path]:
    """Every file of ``specs``, in order: its intact copy in ``dirs`` (:func:`~.locate.file_status` OK), else
    :func:`download` ed into ``dest_dir``. Returns the paths of the files found or downloaded.

    progress_for: ``progress_for(spec)`` gives the ``progress(done, total)`` of that file's download.
    report: called as ``report(spec, event, detail)`` with event "present" (detail: the path found),
    "start" (``dest_dir``), "done" (the downloaded path) or "failed" (the DownloadError).
    keep_going: after a failed download go on with the next file; else its DownloadError is raised.
    """
    def tell(spec, event, detail):
        if report is not None:
            report(spec, event, detail)

    paths: List[Path] = []
    for spec in specs:
        found = locate.file_status(spec, dirs)
        if found.state == locate.OK:
            paths.append(found.path)
            tell(spec, "present", found.path)
            continue
        tell(spec, "start", dest_dir)
        try:
            path = download(spec, dest_dir, progress=progress_for(spec) if progress_for else None, timeout=timeout)
        except DownloadError as exc:
            if not keep_going:
                raise
            tell(spec, "failed", exc)
            continue
        paths.append(path)
        tell(spec, "done", path)
    return paths
