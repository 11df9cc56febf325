"""Where model files are looked for, which of them are present, and which engines can run.

Lookup order (first match wins, for every file separately):

1. the folder given explicitly (``--checkpoints DIR`` on the command line, the WebUI setting, or
   the ``checkpoints`` argument of these functions);
2. the folders in the environment variable ``SADTALKER_CHECKPOINTS`` (several may be joined with
   ``os.pathsep``, i.e. ``:`` on Linux/macOS and ``;`` on Windows);
3. the host's model folder(s), passed in by the host adapter (e.g. ``<webui>/models/SadTalker``);
4. the ``checkpoints/`` folder of this repository (:data:`REPO_CHECKPOINTS`).

Folders that do not exist are skipped; the same folder listed twice is searched once. A file is
found under its official name first and then under its aliases (see
:class:`~sadtalker_ext.models.registry.ModelFile`). Downloads go to the first folder of the same
order (:func:`download_dir`). Only file names and sizes are looked at here, which is instant;
``status(verify=True)`` also hashes every present file against its registered sha256.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import CheckpointError, OptionError
from . import registry
from .registry import ModelFile

#: Environment variable holding extra checkpoint folders (``os.pathsep``-separated).
ENV_VAR = "SADTALKER_CHECKPOINTS"

#: The repository's own ``checkpoints/`` folder (git-ignored apart from its README).
REPO_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
#: How the user fetches missing files, for error messages (``{engine}``: the model set). The WebUI
#: adapter replaces it with its Models panel: a WebUI user has no command line to run it from.
DOWNLOAD_HINT = "run 'python -m sadtalker_ext models download --engine {engine}'"


def download_hint(engine: str) -> str:
    """How to download the files of model set ``engine`` here (see :data:`DOWNLOAD_HINT`)."""
    return DOWNLOAD_HINT.format(engine=engine)

PathArg = Union[str, "os.PathLike[str]"]
DirsArg = Union[None, PathArg, Sequence[PathArg]]

#: Values of :attr:`FileStatus.state`.
OK, SIZE_MISMATCH, HASH_MISMATCH, PARTIAL, MISSING = (
    "ok", "size-mismatch", "hash-mismatch", "partial", "missing")


def _as_list(value: DirsArg) -> List[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    return [Path(os.path.expanduser(os.fspath(v))) for v in value if os.fspath(v)]


def search_dirs(checkpoints: DirsArg = None, host_dir: DirsArg = None, *,
                environ: Optional[Mapping[str, str]] = None,
                repo_dir: Optional[PathArg] = REPO_CHECKPOINTS,
                existing_only: bool = False) -> List[Path]:
    """The folders searched for model files, in lookup order.

    Args:
        checkpoints: explicit folder(s) (``--checkpoints DIR``); searched first.
        host_dir: the host's model folder(s), e.g. ``<webui>/models/SadTalker``.
        environ: mapping read for :data:`ENV_VAR` (default ``os.environ``).
        repo_dir: the repository's ``checkpoints/`` folder, searched last (``None`` to leave out).
        existing_only: drop folders that do not exist.

    Returns:
        Folders as ``Path`` objects (``~`` expanded), duplicates removed (same real path).
    """
    env = os.environ if environ is None else environ
    env_dirs = [d for d in env.get(ENV_VAR, "").split(os.pathsep) if d.strip()]
    ordered = (_as_list(checkpoints) + _as_list(env_dirs) + _as_list(host_dir)
               + _as_list(repo_dir))
    out: List[Path] = []
    seen = set()
    for d in ordered:
        key = os.path.normcase(os.path.realpath(d))
        if key in seen:
            continue
        seen.add(key)
        if existing_only and not d.is_dir():
            continue
        out.append(d)
    return out


def download_dir(checkpoints: DirsArg = None, host_dir: DirsArg = None, *,
                 environ: Optional[Mapping[str, str]] = None,
                 repo_dir: Optional[PathArg] = REPO_CHECKPOINTS) -> Path:
    """The folder downloads go to: the first folder of :func:`search_dirs` (created on download).

    Raises:
        CheckpointError: no folder at all was configured (only possible with ``repo_dir=None``).
    """
    dirs = search_dirs(checkpoints, host_dir, environ=environ, repo_dir=repo_dir)
    if not dirs:
        raise CheckpointError("No checkpoint folder is configured; pass --checkpoints DIR or set "
                              f"{ENV_VAR}.")
    return dirs[0]


def _names_for(name: str, files: Optional[Sequence[ModelFile]] = None) -> Tuple[str, ...]:
    pool = registry.FILES if files is None else files
    for spec in pool:
        if name == spec.name or name in spec.aliases:
            return spec.all_names
    return (name,)


def _resolve_dirs(dirs: DirsArg, checkpoints: DirsArg, host_dir: DirsArg,
                  environ: Optional[Mapping[str, str]], repo_dir: Optional[PathArg]) -> List[Path]:
    if dirs is not None:
        return _as_list(dirs)
    return search_dirs(checkpoints, host_dir, environ=environ, repo_dir=repo_dir)


def find_file(name: str, dirs: DirsArg = None, *, checkpoints: DirsArg = None,
              host_dir: DirsArg = None, environ: Optional[Mapping[str, str]] = None,
              repo_dir: Optional[PathArg] = REPO_CHECKPOINTS,
              files: Optional[Sequence[ModelFile]] = None) -> Optional[Path]:
    """Path of the model file ``name`` in the first folder that has it, else ``None``.

    ``dirs`` (a folder or a list) replaces the lookup order of :func:`search_dirs`; without it
    the order is built from ``checkpoints``, the environment, ``host_dir`` and ``repo_dir``. A
    registered file is also found under its aliases (its official name is tried first in each
    folder). Size is not checked here (see :func:`status`); ``.part`` downloads are never returned.
    """
    names = _names_for(name, files)
    for d in _resolve_dirs(dirs, checkpoints, host_dir, environ, repo_dir):
        for n in names:
            candidate = d / n
            if candidate.is_file():
                return candidate
    return None


def require_file(name: str, dirs: DirsArg = None, *, checkpoints: DirsArg = None,
                 host_dir: DirsArg = None, environ: Optional[Mapping[str, str]] = None,
                 repo_dir: Optional[PathArg] = REPO_CHECKPOINTS) -> Path:
    """Like :func:`find_file` but raises when the file is absent.

    Raises:
        CheckpointError: one line naming the file, the folders searched, and how to get it
        (``models download`` or the URL to download it by hand).
    """
    found = find_file(name, dirs, checkpoints=checkpoints, host_dir=host_dir, environ=environ,
                      repo_dir=repo_dir)
    if found is not None:
        return found
    searched = _resolve_dirs(dirs, checkpoints, host_dir, environ, repo_dir)
    where = ", ".join(str(d) for d in searched) or "(no folder configured)"
    hint = ""
    try:
        spec = registry.get_file(name)
    except OptionError:  # not a registered file: no download hint
        spec = None
    if spec is not None:
        source = spec.urls[0] if spec.urls else (spec.page or "")
        hint = (f" To get it, {download_hint(spec.engine)}, or download it from {source} "
                f"and put it in {searched[0] if searched else 'a checkpoint folder'}.")
    raise CheckpointError(f"Model file {name} not found in: {where}.{hint}")


@dataclass(frozen=True)
class FileStatus:
    """State of one registered file on this machine.

    Attributes:
        spec: the registry entry.
        state: ``"ok"`` (present; size matches when known, and the hash when verified),
            ``"size-mismatch"`` (present, but not the size of the official file),
            ``"hash-mismatch"`` (present, right size, wrong sha256; only with ``verify=True``),
            ``"partial"`` (no finished file, but an interrupted download ``<name>.part``),
            ``"missing"``.
        path: the file found (the ``.part`` file for ``"partial"``), or ``None``.
        size: its size in bytes, or ``None``.
    """

    spec: ModelFile
    state: str
    path: Optional[Path]
    size: Optional[int]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def engine(self) -> str:
        return self.spec.engine

    @property
    def present(self) -> bool:
        """A file is at the final name (it will be used, even with a size mismatch)."""
        return self.state in (OK, SIZE_MISMATCH, HASH_MISMATCH)

    @property
    def expected_size(self) -> Optional[int]:
        return self.spec.size


def file_status(spec: ModelFile, dirs: Sequence[Path], *, verify: bool = False) -> FileStatus:
    """Status of one file in the given folders (see :class:`FileStatus`)."""
    found = None
    for d in dirs:
        for n in spec.all_names:
            if (d / n).is_file():
                found = d / n
                break
        if found is not None:
            break
    if found is not None:
        size = found.stat().st_size
        if spec.size is not None and size != spec.size:
            return FileStatus(spec, SIZE_MISMATCH, found, size)
        if verify and spec.sha256 is not None:
            from .download import sha256_file
            if sha256_file(found) != spec.sha256.lower():
                return FileStatus(spec, HASH_MISMATCH, found, size)
        return FileStatus(spec, OK, found, size)
    for d in dirs:
        part = d / (spec.name + ".part")
        if part.is_file():
            return FileStatus(spec, PARTIAL, part, part.stat().st_size)
    return FileStatus(spec, MISSING, None, None)


def status(engine: Optional[str] = None, dirs: DirsArg = None, *, checkpoints: DirsArg = None,
           host_dir: DirsArg = None, environ: Optional[Mapping[str, str]] = None,
           repo_dir: Optional[PathArg] = REPO_CHECKPOINTS,
           files: Optional[Sequence[ModelFile]] = None,
           verify: bool = False) -> List[FileStatus]:
    """One :class:`FileStatus` per registered file (of ``engine`` only, when given).

    Args:
        engine: ``"sadtalker"``, ``"wav2lip"``, ``"restoration"`` or ``None`` for all.
        dirs / checkpoints / host_dir / environ / repo_dir: where to look (see :func:`find_file`).
        files: the registry to report on (default :data:`registry.FILES`; tests pass their own).
        verify: also hash every present file whose sha256 is known (reads every byte: slow).

    Raises:
        OptionError: unknown engine.
    """
    searched = _resolve_dirs(dirs, checkpoints, host_dir, environ, repo_dir)
    return [file_status(spec, searched, verify=verify)
            for spec in registry.files_for(engine, files)]


def missing_for(engine: str, dirs: DirsArg = None, *, checkpoints: DirsArg = None,
                host_dir: DirsArg = None, environ: Optional[Mapping[str, str]] = None,
                repo_dir: Optional[PathArg] = REPO_CHECKPOINTS) -> List[Tuple[str, ...]]:
    """The requirements of ``engine`` that no present file satisfies, each as its tuple of
    alternative file names (empty list: the engine can run).

    Raises:
        OptionError: unknown engine.
    """
    spec = registry.get_engine(engine)
    searched = _resolve_dirs(dirs, checkpoints, host_dir, environ, repo_dir)
    return [alts for alts in spec.requirements
            if not any(find_file(n, searched) is not None for n in alts)]


def engine_available(engine: str, dirs: DirsArg = None, **kwargs) -> bool:
    """``True`` when every requirement of ``engine`` has a present file (see :func:`missing_for`)."""
    return not missing_for(engine, dirs, **kwargs)


def available_engines(dirs: DirsArg = None, *, checkpoints: DirsArg = None,
                      host_dir: DirsArg = None, environ: Optional[Mapping[str, str]] = None,
                      repo_dir: Optional[PathArg] = REPO_CHECKPOINTS) -> List[str]:
    """Names of the engines whose required files are all present, in registry order.

    The weights-free engine needs no file and is not listed here.
    """
    searched = _resolve_dirs(dirs, checkpoints, host_dir, environ, repo_dir)
    return [name for name in registry.ENGINES if not missing_for(name, searched)]
