"""``results.jsonl``: one JSON line per finished attempt, appended, never rewritten.

A line: ``{"job": name, "line": n, "key": sha256, "status": "done"|"failed", "output": "x.mp4",
"sidecar": "x.json", "error": one line or null, "error_type": ..., "seconds": float, "attempt": n,
"worker": "local"|"pid@node", "time": ISO-8601 UTC}``. Each line is written by one ``write`` on a
file opened for appending and flushed to disk, so a crash leaves every earlier line whole; a torn
last line (power loss) is ignored on reading.

:class:`OutputFolder` also owns the folder's lock (one batch run per output folder at a time) and
the removal of temporary files a killed run left behind.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OptionError, OutputError

RESULTS = "results.jsonl"
LOCK = ".batch.lock"


@dataclass
class KeyState:
    """What results.jsonl says about one job key."""

    done: dict | None = None
    failures: int = 0
    last_error: dict | None = None


@dataclass
class OutputFolder:
    """The batch output folder: videos, sidecars, results.jsonl, the lock."""

    path: Path
    _lock_fd: int | None = field(default=None, repr=False)

    def __post_init__(self):
        self.path = Path(self.path)

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    def open(self) -> "OutputFolder":
        """Create the folder and take its lock (OptionError when another run holds it)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the output folder {self.path}: {exc.strerror or exc}") from None
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            pass
        except OSError:
            os.close(fd)
            raise OptionError(f"another batch run is writing to {self.path}; wait for it or choose "
                              f"another --out") from None
        self._lock_fd = fd
        return self

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def remove_leftovers(self, names=None) -> list[Path]:
        """Delete the hidden temporary files that killed runs left for the outputs ``names`` (file
        names such as ``"anna.mp4"``): ``.anna.<id>.part.mp4`` (video), ``.anna.json.part`` (sidecar),
        ``.anna.mp4.<pid>.part`` (Ray driver). None: every ``.*.part*`` file. Only call while none of
        these outputs is being written (the folder's lock guarantees it among batch runs; temporary
        files of other outputs, e.g. a WebUI run into the same folder, are left alone). Returns them."""
        stems = None if names is None else {Path(n).stem for n in names} | {Path(n).name for n in names}
        removed = []
        for p in self.path.glob(".*.part*"):
            if stems is not None and not any(p.name.startswith(f".{s}.") for s in stems):
                continue
            if p.is_file():
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
        return removed

    def read(self) -> dict[str, KeyState]:
        """The state of every key seen in results.jsonl (a torn or foreign line is skipped)."""
        states: dict[str, KeyState] = {}
        try:
            text = self.results.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return states
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
                continue
            st = states.setdefault(rec["key"], KeyState())
            if rec.get("status") == "done":
                st.done = rec
            elif rec.get("status") == "failed":
                st.failures += 1
                st.last_error = rec
        return states

    def is_done(self, key: str, state: KeyState | None, output: str) -> bool:
        """True when ``key`` finished earlier and its video and sidecar are still there."""
        if state is None or state.done is None:
            return self.sidecar_matches(output, key)
        return (self.path / output).is_file() and (self.path / output).with_suffix(".json").is_file()

    def sidecar_matches(self, output: str, key: str) -> bool:
        """True when ``output`` and its sidecar exist and the sidecar records ``key`` (a run killed
        after writing the video but before its results line)."""
        video = self.path / output
        side = video.with_suffix(".json")
        if not (video.is_file() and side.is_file()):
            return False
        try:
            return json.loads(side.read_text()).get("batch", {}).get("key") == key
        except (OSError, ValueError, AttributeError):
            return False

    def append(self, record: dict) -> None:
        """Append one line to results.jsonl, flushed to disk."""
        record = dict(record)
        record.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        data = (json.dumps(record, default=str, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["OutputFolder", "KeyState", "RESULTS"]
