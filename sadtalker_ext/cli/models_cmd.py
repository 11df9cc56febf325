"""``models status`` and ``models download``: the command-line face of the model manager.

The main CLI registers these with :func:`add_parser` and calls :func:`run` with the parsed
arguments::

    sadtalker models status [--engine E] [--checkpoints DIR] [--verify]
    sadtalker models download [--engine E] [--checkpoints DIR] [--file NAME ...] [--all]
                              [--timeout SECONDS]

``status`` prints one row per registered file (file, engine, size, status, path), then the folders
searched in lookup order and the engines whose files are all present. ``download`` fetches the
default files of an engine (or of ``sadtalker`` and ``wav2lip`` when no engine is given; ``--all``
adds the optional ones such as the 512 renderer), skipping files already present, into the first
folder of the lookup order, with a progress line on stderr.

Exit codes: 0 success; 1 a download failed or (``status --engine E``) that engine is not usable.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Mapping, Optional, Sequence, TextIO

from ..models import locate, registry
from ..models.download import download_missing
from ..models.registry import ModelFile, format_size

_STATE_LABEL = {
    locate.OK: "ok",
    locate.SIZE_MISMATCH: "size mismatch",
    locate.HASH_MISMATCH: "HASH MISMATCH",
    locate.PARTIAL: "partial",
    locate.MISSING: "missing",
}


def add_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register ``models status`` and ``models download`` on the main CLI's ``subparsers``.

    Options of these sub-commands default to ``argparse.SUPPRESS`` so that they never overwrite a
    same-named option of the main parser (read them with ``getattr(args, name, None)``). Sets
    ``func=run`` as the default handler. Returns the ``models`` parser.
    """
    parser = subparsers.add_parser(
        "models", help="show, find and download the model files",
        description="Show which model files are present and download missing ones.")
    sub = parser.add_subparsers(dest="models_command", metavar="{status,download}")
    sub.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--engine", choices=registry.engine_names(), default=argparse.SUPPRESS,
                        help="only the files of this engine")
    common.add_argument("--checkpoints", metavar="DIR", default=argparse.SUPPRESS,
                        help="checkpoint folder, searched first and used for downloads "
                             f"(else ${locate.ENV_VAR}, the host's model folder, ./checkpoints)")

    st = sub.add_parser("status", parents=[common], help="list model files and where they are")
    st.add_argument("--verify", action="store_true", default=argparse.SUPPRESS,
                    help="also check the sha256 of every present file (reads every byte)")

    dl = sub.add_parser("download", parents=[common], help="download missing model files")
    dl.add_argument("--file", dest="files", action="append", metavar="NAME",
                    default=argparse.SUPPRESS, help="download this file (repeatable)")
    dl.add_argument("--all", dest="all_files", action="store_true", default=argparse.SUPPRESS,
                    help="include optional files (512 renderer, face restoration)")
    dl.add_argument("--timeout", type=float, metavar="SECONDS", default=argparse.SUPPRESS,
                    help="network timeout per connect / read (default 30)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, *, host_dir: locate.DirsArg = None,
        out: Optional[TextIO] = None, err: Optional[TextIO] = None,
        environ: Optional[Mapping[str, str]] = None,
        repo_dir: Optional[locate.PathArg] = locate.REPO_CHECKPOINTS) -> int:
    """Run ``models status`` / ``models download`` for parsed ``args``; returns the exit code.

    ``host_dir`` is the host's model folder (the WebUI adapter passes ``<webui>/models/SadTalker``);
    ``out`` / ``err`` default to ``sys.stdout`` / ``sys.stderr``; ``environ`` and ``repo_dir`` are
    for tests (see :func:`~sadtalker_ext.models.locate.search_dirs`).

    Raises:
        OptionError: unknown ``--file`` name.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    where = dict(checkpoints=getattr(args, "checkpoints", None), host_dir=host_dir,
                 environ=environ, repo_dir=repo_dir)
    command = getattr(args, "models_command", None) or "status"
    if command == "download":
        return _run_download(args, where, out, err)
    return _run_status(args, where, out)


def _table(rows: Sequence[Sequence[str]]) -> List[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _run_status(args: argparse.Namespace, where: dict, out: TextIO) -> int:
    engine = getattr(args, "engine", None)
    dirs = locate.search_dirs(where["checkpoints"], where["host_dir"], environ=where["environ"],
                              repo_dir=where["repo_dir"])
    states = locate.status(engine, dirs, verify=bool(getattr(args, "verify", False)))
    rows = [("file", "engine", "size", "status", "path")]
    for s in states:
        label = _STATE_LABEL[s.state]
        if s.state == locate.PARTIAL and s.expected_size and s.size is not None:
            label = f"partial {100.0 * s.size / s.expected_size:.0f}%"
        if s.state == locate.MISSING and not s.spec.required:
            label = "missing (optional)"
        if s.state == locate.SIZE_MISMATCH:
            size = f"{format_size(s.size)} (expected {format_size(s.expected_size)})"
        else:
            size = format_size(s.spec.display_size if s.size is None else s.size)
        rows.append((s.name, s.engine, size, label, str(s.path) if s.path else "-"))
    for line in _table(rows):
        print(line, file=out)
    print("", file=out)
    print("searched, in order:", file=out)
    for i, d in enumerate(dirs, 1):
        note = "" if d.is_dir() else "  (does not exist)"
        print(f"  {i}. {d}{note}", file=out)
    available = locate.available_engines(dirs)
    print(f"engines available: {', '.join(available) if available else 'none'}", file=out)
    for name in ([engine] if engine else registry.engine_names()):
        if name in available:
            continue
        needs = "; ".join(" or ".join(alts) for alts in locate.missing_for(name, dirs))
        print(f"  {name} needs: {needs}", file=out)
    if any(s.state in (locate.SIZE_MISMATCH, locate.HASH_MISMATCH) for s in states):
        print("files marked 'size mismatch' / 'HASH MISMATCH' are not the official release files; "
              "delete them and run 'models download'.", file=out)
    return 1 if engine and engine not in available else 0


class _ProgressLine:
    """Progress on ``stream``: one rewritten line on a terminal, a line per 10% otherwise."""

    def __init__(self, name: str, stream: TextIO, min_interval: float = 0.5):
        self.name = name
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.min_interval = min_interval
        self.t0 = time.monotonic()
        self.last_t = 0.0
        self.last_decile = -1
        self.first_done: Optional[int] = None

    def __call__(self, done: int, total: Optional[int]) -> None:
        now = time.monotonic()
        if self.first_done is None:
            self.first_done = done
        finished = total is not None and done >= total
        pct = f"{100.0 * done / total:5.1f}%" if total else "   ?  "
        rate = (done - self.first_done) / max(now - self.t0, 1e-6)
        text = f"  {self.name}  {pct}  {format_size(done)} / {format_size(total)}  " \
               f"{format_size(int(rate))}/s"
        if self.tty:
            if finished or now - self.last_t >= self.min_interval:
                self.stream.write("\r" + text.ljust(78) + ("\n" if finished else ""))
                self.stream.flush()
                self.last_t = now
        else:
            decile = int(10 * done / total) if total else -1
            if finished or decile > self.last_decile:
                self.stream.write(text + "\n")
                self.last_decile = decile


def _selected(args: argparse.Namespace) -> List[ModelFile]:
    names = getattr(args, "files", None) or []
    if names:
        return [registry.get_file(n) for n in names]
    engine = getattr(args, "engine", None)
    everything = bool(getattr(args, "all_files", False))
    if engine:
        return registry.files_for(engine) if everything else registry.default_downloads(engine)
    if everything:
        return list(registry.FILES)
    chosen: List[ModelFile] = []
    for name, spec in registry.ENGINES.items():
        if not spec.optional:
            chosen.extend(registry.default_downloads(name))
    return chosen


def _run_download(args: argparse.Namespace, where: dict, out: TextIO, err: TextIO) -> int:
    dirs = locate.search_dirs(where["checkpoints"], where["host_dir"], environ=where["environ"],
                              repo_dir=where["repo_dir"])
    dest = locate.download_dir(where["checkpoints"], where["host_dir"], environ=where["environ"],
                               repo_dir=where["repo_dir"])
    timeout = getattr(args, "timeout", None) or 30.0
    failures = []

    def report(spec: ModelFile, event: str, detail) -> None:
        if event == "present":
            print(f"{spec.name}: already present at {detail}", file=out)
        elif event == "start":
            print(f"{spec.name}: downloading {format_size(spec.display_size)} to {detail}", file=out)
        elif event == "done":
            print(f"{spec.name}: ok ({detail})", file=out)
        else:
            failures.append(detail)
            print(str(detail), file=err)
    download_missing(_selected(args), dirs, dest, progress_for=lambda spec: _ProgressLine(spec.name, err),
                     timeout=timeout, report=report, keep_going=True)
    return 1 if failures else 0
