"""Jobs files: a CSV or JSON list of generation jobs, each validated into a :class:`BatchJob`.

CSV: a header row, then one job per row. JSON: a list of objects, or ``{"jobs": [...]}``. Keys:

* ``image`` (a portrait) or ``video`` (a video to lip-sync) -- one of them;
* ``audio`` (speech file) or ``text`` (spoken by offline TTS, with optional ``lang``, ``voice``,
  ``rate``, ``pitch``, ``tts_engine``) -- one of them;
* ``output``: the video's name in the output folder (``.mp4`` added; default ``NNN-<image stem>``);
* any :class:`~sadtalker_ext.options.GenerateOptions` field (``size``, ``seed``, ``still``,
  ``engine``, ...) as its own column/key, and/or ``options``: a JSON object of them. They override
  the command line's options for that job and are validated by ``GenerateOptions``.

Relative paths are relative to the jobs file's folder. A job whose inputs or options are unusable
(missing file, unknown option, value out of range) is kept with its one-line ``error`` so that the
run records it as failed and goes on; a file that cannot be read as jobs at all (bad CSV/JSON, no
``image``/``video`` column, two jobs with one output name) raises OptionError.

Each job has a ``key``: the sha256 of its inputs' bytes, its text and TTS settings and its final
options. Resuming compares keys: a finished job with the same key is skipped.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError, OptionError, TalkingHeadError
from ..options import GenerateOptions
from ..io.digest import sha256_file as _sha256_file

#: Job keys that are not generation options.
INPUT_KEYS = ("image", "video", "audio", "text")
TTS_KEYS = ("lang", "voice", "rate", "pitch", "tts_engine")
OTHER_KEYS = ("output", "options", "name")
MAX_JOBS = 100_000
MAX_TEXT = 5000
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,150}$")


@dataclass
class BatchJob:
    """One job of a jobs file.

    index: 0-based position in the file. line: its line (CSV) or list position + 1 (JSON), for messages.
    image / video / audio: absolute paths (or None); text: speech to synthesise (or None);
    tts: {"lang", "voice", "rate", "pitch", "tts_engine"} for ``text`` jobs.
    options: validated GenerateOptions (None when ``error`` is set before they could be built).
    output: file name of the video (``<name>.mp4``) in the output folder.
    key: sha256 hex of inputs + options (see module docstring). error: one line, or None.
    """

    index: int
    line: int
    output: str
    image: Path | None = None
    video: Path | None = None
    audio: Path | None = None
    text: str | None = None
    tts: dict = field(default_factory=dict)
    options: GenerateOptions | None = None
    key: str = ""
    error: str | None = None
    error_type: str | None = None

    @property
    def name(self) -> str:
        """The output's stem (what progress and results.jsonl call the job)."""
        return self.output[:-4] if self.output.endswith(".mp4") else self.output

    def spec(self) -> dict:
        """A picklable, JSON-able description (for workers in other processes or machines)."""
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()
             if k != "options"}
        d["options"] = None if self.options is None else _jsonable(self.options.to_dict())
        return d

    @classmethod
    def from_spec(cls, d: Mapping[str, Any]) -> "BatchJob":
        d = dict(d)
        opts = d.pop("options")
        for k in ("image", "video", "audio"):
            d[k] = Path(d[k]) if d.get(k) else None
        job = cls(**d)
        if opts is not None:
            opts = dict(opts)
            if isinstance(opts.get("pads"), list):
                opts["pads"] = tuple(opts["pads"])
            job.options = GenerateOptions.from_dict(opts)
        return job


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _coerce(name: str, value: Any, default: Any) -> Any:
    """A CSV cell (text) as the option's type, taken from its default."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if isinstance(default, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise OptionError(f"option {name} must be true or false, got {value!r}")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise OptionError(f"option {name} must be an integer, got {value!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise OptionError(f"option {name} must be a number, got {value!r}") from None
    if isinstance(default, tuple):
        try:
            return tuple(int(p) for p in re.split(r"[\s,]+", text.strip("()[] ")) if p)
        except ValueError:
            raise OptionError(f"option {name} must be integers like '0 10 0 0', got {value!r}") from None
    return text


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line, raw mapping) per job. Raises OptionError when the file is not a jobs file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise OptionError(f"jobs file {path} does not exist") from None
    except OSError as exc:
        raise OptionError(f"cannot read jobs file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise OptionError(f"jobs file {path} is not UTF-8 text; save it as UTF-8 CSV or JSON") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise OptionError(f"jobs file {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict) and isinstance(data.get("jobs"), list):
            data = data["jobs"]
        if not isinstance(data, list) or not all(isinstance(j, dict) for j in data):
            raise OptionError(f"jobs file {path} must hold a JSON list of job objects, or {{\"jobs\": [...]}}")
        rows = [(i + 1, j) for i, j in enumerate(data)]
    else:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            raise OptionError(f"jobs file {path} is empty; it needs a header row such as image,audio,output")
        header = [h.strip() for h in reader.fieldnames if h is not None]
        if not ({"image", "video"} & set(header)):
            raise OptionError(f"jobs file {path} has no 'image' or 'video' column (header: {', '.join(header)})")
        rows = []
        for row in reader:
            if None in row:
                raise OptionError(f"jobs file {path}, line {reader.line_num}: more cells than header columns")
            cells = {k.strip(): v for k, v in row.items() if k is not None and v is not None and v.strip() != ""}
            if cells:
                rows.append((reader.line_num, cells))
    if len(rows) > MAX_JOBS:
        raise OptionError(f"jobs file {path} has {len(rows)} jobs; split it into files of at most {MAX_JOBS}")
    return rows


def job_key(job: BatchJob) -> str:
    """sha256 hex of the job's inputs (file contents, text, TTS settings) and options.

    A missing file is keyed by its path, so that the key changes once the file exists.
    """
    parts: dict[str, Any] = {}
    for k in ("image", "video", "audio"):
        p = getattr(job, k)
        if p is not None:
            parts[k] = _sha256_file(p) if p.is_file() else f"missing:{p}"
    if job.text is not None:
        parts["text"] = job.text
        parts["tts"] = job.tts
    parts["options"] = None if job.options is None else _jsonable(job.options.to_dict())
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _build(index: int, line: int, raw: Mapping[str, Any], base: GenerateOptions, root: Path,
           resolve=None, check_options=None) -> BatchJob:
    """One job from its raw mapping; errors land in ``job.error``."""
    known = {f.name: f.default for f in fields(GenerateOptions)}
    out_name = raw.get("output") or raw.get("name")
    job = BatchJob(index=index, line=line, output="")
    try:
        # the name first, so that every later error is recorded under it
        if out_name is None:
            src = raw.get("image") or raw.get("video")
            stem = Path(str(src).replace("\\", "/")).stem if isinstance(src, str) and src.strip() else "job"
            out_name = f"{index + 1:03d}-{stem}"
        out_name = str(out_name).strip()
        if out_name.lower().endswith(".mp4"):
            out_name = out_name[:-4]
        if not _NAME_OK.match(out_name) or ".." in out_name:
            raise OptionError(f"output name {out_name!r} must be a plain file name (letters, digits, . _ - "
                              f"space; no folders)")
        job.output = out_name + ".mp4"
        for k in ("image", "video", "audio"):
            v = raw.get(k)
            if v is not None:
                if not isinstance(v, str) or not v.strip():
                    raise InputError(f"'{k}' must be a file path")
                if resolve is not None:
                    setattr(job, k, Path(resolve(k, v.strip())))
                else:
                    p = Path(v.strip()).expanduser()
                    setattr(job, k, (p if p.is_absolute() else root / p).resolve())
        text = raw.get("text")
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise InputError("'text' must be the words to speak")
            if len(text) > MAX_TEXT:
                raise InputError(f"'text' has {len(text)} characters; at most {MAX_TEXT} per job")
            job.text = text
        if (job.image is None) == (job.video is None):
            raise InputError("give either 'image' or 'video' (one of them)")
        if (job.audio is None) == (job.text is None):
            raise InputError("give either 'audio' or 'text' (one of them)")
        tts = {k: raw[k] for k in TTS_KEYS if raw.get(k) is not None}
        for k in ("rate", "pitch"):
            if k in tts:
                tts[k] = _coerce(k, tts[k], 0.0)
        if job.text is None and set(tts) - {"lang"}:
            raise OptionError(f"{', '.join(sorted(set(tts) - {'lang'}))} only apply to 'text' jobs")
        job.tts = tts
        unknown = sorted(set(raw) - set(INPUT_KEYS) - set(TTS_KEYS) - set(OTHER_KEYS) - set(known))
        if unknown:
            raise OptionError(f"unknown column(s)/key(s) {', '.join(unknown)}; options are: "
                              f"{', '.join(sorted(known))}")
        overrides: dict[str, Any] = {}
        extra = raw.get("options")
        if extra is not None:
            if isinstance(extra, str):
                try:
                    extra = json.loads(extra)
                except ValueError:
                    raise OptionError("'options' must be a JSON object, e.g. {\"size\": 256}") from None
            if not isinstance(extra, dict):
                raise OptionError("'options' must be a JSON object, e.g. {\"size\": 256}")
            overrides.update(extra)
        for k in known:
            if k in raw:
                overrides[k] = raw[k]
        if "lang" in tts:
            overrides.setdefault("language", tts["lang"])
        data = base.to_dict()
        for k, v in overrides.items():
            if k in known:
                v = _coerce(k, v, known[k])
                if isinstance(v, list) and isinstance(known[k], tuple):
                    v = tuple(v)
            data[k] = v
        job.options = GenerateOptions.from_dict(data)
        if check_options is not None:
            job.options = check_options(job.options)
        for k in ("image", "video", "audio"):
            p = getattr(job, k)
            if p is not None and not p.is_file():
                raise InputError(f"{k} file {p} does not exist; fix the path in the jobs file")
    except TalkingHeadError as exc:
        job.error, job.error_type = exc.message, type(exc).__name__
    if not job.output:
        job.output = f"{index + 1:03d}-job.mp4"
    job.key = job_key(job)
    return job


def load_jobs(path: str | Path, base: GenerateOptions | None = None, *, resolve=None,
              check_options=None) -> list[BatchJob]:
    """The jobs of a CSV/JSON jobs file, options = ``base`` (the command line's) + per-job overrides.

    resolve(field, value) -> Path: where an ``image``/``video``/``audio`` entry points (default: the
    path, relative to the jobs file's folder); it may raise InputError (the job's error). The tab
    maps names to the files the client uploaded. check_options(GenerateOptions) -> GenerateOptions:
    a last check of each job's options (the tab's server-side rules for path options).
    Raises OptionError when the file is unreadable as jobs or two jobs share an output name;
    per-job problems are in each job's ``error``.
    """
    path = Path(path)
    base = (base or GenerateOptions()).validate()
    rows = _read_rows(path)
    if not rows:
        raise OptionError(f"jobs file {path} has no jobs")
    jobs = [_build(i, line, raw, base, path.resolve().parent, resolve, check_options)
            for i, (line, raw) in enumerate(rows)]
    seen: dict[str, int] = {}
    for job in jobs:
        low = job.output.lower()
        if low in seen:
            raise OptionError(f"jobs file {path}: jobs at lines {seen[low]} and {job.line} both write "
                              f"{job.output}; give each job its own 'output' name")
        seen[low] = job.line
    return jobs


__all__ = ["BatchJob", "load_jobs", "job_key"]
