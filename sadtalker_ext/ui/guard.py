"""Which server files the tab's gradio handlers may open: only what the client uploaded through gradio
(gradio's upload / temp folder) and the host's output folder, whatever path a payload names.

A gradio 3.41 payload such as ``{"name": "/etc/passwd", "is_file": true}`` makes a File, Audio or Video
component copy that server file into gradio's temp folder before any handler runs
(``make_temp_copy_if_needed``), and a URL there makes it download the URL (``download_temp_copy_if_needed``);
gradio 4.40 refuses paths outside its upload folder but still downloads URLs
(``async_move_resource_to_block_cache``). :func:`guard_blocks` wraps exactly those methods on every component
of our Blocks (per instance: the host's own components are left as they are), so a named path outside
:func:`allowed_roots` or any URL is refused with :class:`ServerFileRefused` before gradio touches it.
:func:`check_file` is the same test for the handlers themselves (a path-valued option, an imported file).

This module imports gradio only inside functions (through :mod:`.compat`) and nothing of the host, so the
same guard works in the standalone server and inside the WebUI's gradio.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterable, List, Optional

from ..errors import InputError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

#: gradio methods that read or fetch a path or URL the payload names (3.41 and 4.40).
GUARDED_METHODS = ("make_temp_copy_if_needed", "download_temp_copy_if_needed",
                   "move_resource_to_block_cache", "async_move_resource_to_block_cache")


class ServerFileRefused(InputError):
    """A payload named a file that was not uploaded through this page (or a URL): refused, nothing read."""

    http_status = 403


def is_url(value) -> bool:
    """True for ``http://...``, ``file://...`` and any other ``scheme://`` string."""
    return isinstance(value, str) and bool(_URL.match(value.strip()))


def upload_roots(component=None) -> List[Path]:
    """The folders where the running gradio keeps what clients uploaded and its own temp copies.

    gradio 3: ``GRADIO_TEMP_DIR`` or ``<tmp>/gradio`` (``App.uploaded_file_dir``) and the component's
    ``DEFAULT_TEMP_DIR``; gradio 4: ``gradio.utils.get_upload_folder()`` and the component's ``GRADIO_CACHE``.
    """
    roots = []
    env = os.environ.get("GRADIO_TEMP_DIR")
    roots.append(env if env else str(Path(tempfile.gettempdir()) / "gradio"))
    for attr in ("DEFAULT_TEMP_DIR", "GRADIO_CACHE"):
        value = getattr(component, attr, None) if component is not None else None
        if isinstance(value, (str, os.PathLike)) and str(value):
            roots.append(str(value))
    try:
        from gradio import utils as gutils
        get = getattr(gutils, "get_upload_folder", None)
        if callable(get):
            roots.append(str(get()))
    except Exception:  # noqa: BLE001 - no gradio here: the environment's folder above is gradio's default
        pass
    out, seen = [], set()
    for r in roots:
        p = Path(os.path.realpath(r))
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def allowed(path, roots: Iterable[os.PathLike]) -> bool:
    """True when ``path``, with every symlink resolved, lies inside one of ``roots`` (also resolved)."""
    if path is None or is_url(str(path)):
        return False
    try:
        real = Path(os.path.realpath(os.fspath(path)))
    except (TypeError, ValueError, OSError):
        return False
    for root in roots:
        try:
            if _inside(real, Path(os.path.realpath(os.fspath(root)))):
                return True
        except (TypeError, ValueError, OSError):
            continue
    return False


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_file(path, roots: Iterable[os.PathLike], what: str = "file") -> str:
    """``path`` (str) when it may be opened, else raise :class:`ServerFileRefused` (one line)."""
    roots = list(roots)
    if is_url(str(path)):
        raise ServerFileRefused(f"the {what} is a URL ({_short(path)}); the server never fetches URLs: "
                                "upload the file instead")
    if not allowed(path, roots):
        raise ServerFileRefused(f"the {what} '{_short(Path(str(path)).name)}' was not uploaded through this "
                                "page; upload the file (server paths are never opened)")
    return os.fspath(path)


def _guard_method(component, name: str, roots_of: Callable[[object], List[Path]]) -> None:
    original = getattr(component, name, None)
    if original is None or getattr(original, "_th_guarded", False):
        return
    import inspect

    if inspect.iscoroutinefunction(original):
        async def guarded(path, *args, **kwargs):
            if path is not None:
                check_file(path, roots_of(component))
            return await original(path, *args, **kwargs)
    else:
        def guarded(path, *args, **kwargs):
            if path is not None:
                check_file(path, roots_of(component))
            return original(path, *args, **kwargs)
    guarded._th_guarded = True
    try:
        setattr(component, name, guarded)
    except (AttributeError, TypeError):  # pragma: no cover - a component that refuses instance attributes
        pass


def guard_component(component, extra_roots: Callable[[], Iterable[os.PathLike]] = lambda: ()) -> None:
    """Make ``component`` refuse to copy or fetch any path outside gradio's upload folders and
    ``extra_roots()`` (e.g. the output folder), and any URL (see the module doc)."""
    def roots_of(comp) -> List[Path]:
        roots = upload_roots(comp)
        try:
            roots += [Path(os.path.realpath(os.fspath(r))) for r in extra_roots() if r is not None]
        except Exception:  # noqa: BLE001 - no output folder (yet): only gradio's own folders are allowed
            pass
        return roots

    for name in GUARDED_METHODS:
        _guard_method(component, name, roots_of)


def guard_blocks(blocks, extra_roots: Callable[[], Iterable[os.PathLike]] = lambda: ()) -> int:
    """:func:`guard_component` on every component of ``blocks`` (gradio 3.41 and 4.40); returns how many."""
    n = 0
    for block in list(getattr(blocks, "blocks", {}).values()):
        if any(callable(getattr(block, m, None)) for m in GUARDED_METHODS):
            guard_component(block, extra_roots)
            n += 1
    return n


def output_roots(host) -> Callable[[], List[Path]]:
    """``extra_roots`` for :func:`guard_blocks`: the host's output folder, read at each call."""
    def roots() -> List[Path]:
        try:
            return [Path(host.output_dir())]
        except Exception:  # noqa: BLE001 - a host without an output folder allows gradio's folders only
            return []
    return roots


def file_roots(host, component=None) -> List[Path]:
    """Every folder a handler may open a client-named file in: gradio's upload folders + the output folder."""
    return upload_roots(component) + output_roots(host)()


def confined_name(value: Optional[str], what: str) -> Optional[str]:
    """A single, harmless folder name from a form value (None / empty -> None). Raises OptionError."""
    from ..errors import OptionError
    if value is None or not str(value).strip():
        return None
    name = str(value).strip()
    if (len(name) > 64 or name in (".", "..") or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name)):
        raise OptionError(f"{what} must be a plain folder name (letters, digits, '.', '-', '_'; at most 64); "
                          "it is created inside the output folder")
    return name


__all__ = ["ServerFileRefused", "guard_blocks", "guard_component", "check_file", "allowed", "upload_roots",
           "output_roots", "file_roots", "is_url", "confined_name", "GUARDED_METHODS"]
