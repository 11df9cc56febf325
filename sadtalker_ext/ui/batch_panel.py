"""The tab's Batch section: several portraits x one speech (or a text per portrait), or a jobs file.

Every job takes the tab's current settings, and a jobs file may override them per job (as on the
command line, :mod:`sadtalker_ext.batch.jobsfile`); its ``image``/``audio`` entries name files
uploaded in this section (by file name), never paths on the server. Jobs run one at a time under
the host's job lock (never beside a txt2img run), with the tab's progress line and its Interrupt
button (this session's run only). Results land in ``<output folder>/batch-<time>-<id>/``: each video
with its sidecar, ``results.jsonl`` (one line per job, errors included) and ``batch.zip`` of them all;
the section shows a gallery (first frame of each video), the files and the zip.
"""
from __future__ import annotations

import csv
import logging
import os
import re
import secrets
import threading
import time
import zipfile
from pathlib import Path

from ..batch.worker import Worker
from ..errors import InputError, TalkingHeadError
from . import compat, guard

log = logging.getLogger(__name__)

MAX_PORTRAITS = 64
_STEM = re.compile(r"[^A-Za-z0-9_-]+")


def _paths(value) -> list[str]:
    """Paths of a (multiple) File value: gradio 3 tempfile wrappers / dicts, gradio 4 strings."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in items:
        if isinstance(v, dict):
            v = v.get("path") or v.get("name")
        p = os.fspath(v) if isinstance(v, os.PathLike) else getattr(v, "name", v)
        if p:
            out.append(str(p))
    return out


def _first_frame(path: Path):
    import av
    import numpy as np
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            img = frame.to_ndarray(format="rgb24")
            step = max(1, max(img.shape[:2]) // 160)
            return np.ascontiguousarray(img[::step, ::step])
    return None


class BatchPanel:
    """Components and handler of the section (built inside the tab's Blocks by :func:`build_batch_panel`)."""

    def __init__(self, ui):
        self.ui = ui
        self.host = ui.host
        c = self.components = {}
        gr = compat.gr()
        kind = "filepath" if compat.major() >= 4 else "file"
        with compat.make("Accordion", "Batch: many portraits", open=False, elem_id="th_batch_acc"):
            with gr.Row():
                c["images"] = compat.make("File", label=f"Portraits (up to {MAX_PORTRAITS})", file_count="multiple",
                                          file_types=["image"], type=kind, elem_id="th_batch_images")
                c["audio"] = compat.make("File", label="Speech: one file for every portrait (with a jobs file: "
                                         "the files it names)", file_count="multiple", file_types=["audio"],
                                         type=kind, elem_id="th_batch_audio")
            c["texts"] = compat.make("Textbox", label="Or text to speak: one line per portrait, in their order "
                                     "(one line: the same text for all)", lines=3, elem_id="th_batch_texts")
            c["jobs"] = compat.file_input("Or a jobs file (CSV/JSON; 'image'/'audio' name files uploaded here; "
                                          "per-job options override the settings)", "th_batch_jobs",
                                          file_types=[".csv", ".json"])
            c["run"] = compat.make("Button", "Run batch", variant="primary", elem_id="th_batch_run")
            c["status"] = compat.make("HTML", "", elem_id="th_batch_status")
            c["gallery"] = compat.make("Gallery", label="Batch results", elem_id="th_batch_gallery", columns=6,
                                       height=200, allow_preview=False)
            with gr.Row():
                c["files"] = compat.make("File", label="Videos", file_count="multiple", interactive=False,
                                         elem_id="th_batch_files")
                c["zip"] = compat.make("File", label="All outputs (zip)", interactive=False, elem_id="th_batch_zip")
        ui_c = ui.components
        self.inputs = [c["images"], c["audio"], c["texts"], c["jobs"]] + list(ui.option_components)
        self.outputs = [c["status"], c["gallery"], c["files"], c["zip"], ui_c["job_state"]]
        compat.listen(c["run"].click, self.run, self.inputs, self.outputs, show_progress=False)

    # -- jobs ----------------------------------------------------------------------------------------
    def make_jobs(self, images, audios, texts, jobs_file, option_values, folder: Path):
        """The BatchJobs of a request (uploads checked against gradio's upload folders). Raises InputError."""
        from ..batch.jobsfile import load_jobs
        from .controls import to_options
        roots = guard.file_roots(self.host)
        images = [guard.check_file(p, roots, "portrait") for p in _paths(images)]
        audios = [guard.check_file(p, roots, "speech file") for p in _paths(audios)]
        jobs_path = _paths(jobs_file)
        base = self.ui._server_side(to_options(self.ui.specs, option_values))
        check = self.ui._server_side
        if len(images) > MAX_PORTRAITS:
            raise InputError(f"{len(images)} portraits; upload at most {MAX_PORTRAITS} per batch")
        if jobs_path:
            jobs_path = guard.check_file(jobs_path[0], roots, "jobs file")
            uploads = {}
            for p in images + audios:
                uploads.setdefault(Path(p).name, p)
                uploads.setdefault(_upload_name(p), p)

            def by_name(field, value):
                name = Path(value.replace("\\", "/")).name
                if name not in uploads:
                    raise InputError(f"{field} '{name}' was not uploaded; add it to the portraits or speech files")
                return uploads[name]
            return load_jobs(jobs_path, base, resolve=by_name, check_options=check)
        if not images:
            raise InputError("add portraits (several image files), or a jobs file")
        lines = [t.strip() for t in (texts or "").splitlines() if t.strip()]
        if lines and audios:
            raise InputError("give either speech files or texts, not both")
        if not lines and len(audios) != 1:
            raise InputError("upload one speech file for every portrait (or type a text per portrait, or use "
                             "a jobs file)" if not audios else "upload one speech file, or use a jobs file to pair "
                             "several speeches with portraits")
        if lines and len(lines) not in (1, len(images)):
            raise InputError(f"{len(lines)} lines of text for {len(images)} portraits; give one line per portrait, "
                             f"or one line for all")
        path = folder / "jobs.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["image", "audio", "text", "output"])
            for i, img in enumerate(images):
                stem = _STEM.sub("-", Path(_upload_name(img)).stem).strip("-")[:40] or "portrait"
                text = (lines[i] if len(lines) > 1 else lines[0]) if lines else ""
                w.writerow([img, "" if lines else audios[0], text, f"{i + 1:03d}-{stem}"])
        return load_jobs(path, base, check_options=check)

    # -- handler -------------------------------------------------------------------------------------
    def run(self, images, audios, texts, jobs_file, *option_values):
        """Generator handler: yields (status, gallery, files, zip, job token) updates."""
        from ..batch.runner import run_local
        from ..jobs import JobHost
        from .status import error_text, status_html
        keep = compat.update()
        try:
            folder = Path(self.host.output_dir()) / f"batch-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            folder.mkdir(parents=True)
            try:
                jobs = self.make_jobs(images, audios, texts, jobs_file, list(option_values), folder)
            except BaseException:
                _remove_empty(folder)
                raise
        except Exception as exc:
            kind, text = error_text(exc)
            if not isinstance(exc, TalkingHeadError):
                log.exception("talking head batch: bad input")
            yield status_html(kind, text), keep, keep, keep, None
            return
        job_host = JobHost(self.host)
        worker = HostWorker(job_host)
        box: dict = {}

        def work():
            try:
                box["summary"] = run_local(jobs, folder, retries=0, quiet=True, should_stop=job_host.interrupted,
                                           worker=worker)
            except BaseException as exc:  # reported in the section
                box["error"] = exc

        token = secrets.token_urlsafe(16)
        with self.ui._active_lock:
            self.ui._jobs[token] = job_host  # the tab's Interrupt button stops this run (this session only)
        thread = threading.Thread(target=work, name="talking-head-batch", daemon=True)
        t0 = time.perf_counter()
        thread.start()
        try:
            yield status_html("running", f"{len(jobs)} jobs: starting..."), keep, keep, keep, token
            seen = -1
            while thread.is_alive():
                thread.join(0.5)
                version, done, total, text, _ = job_host.snapshot()
                if version != seen and thread.is_alive():
                    seen = version
                    yield (status_html("running", f"job {worker.index}/{len(jobs)} ({worker.current}): "
                                                  f"{text or 'preparing'} - {time.perf_counter() - t0:.0f} s", done, total),
                           keep, keep, keep, token)
        finally:
            with self.ui._active_lock:
                self.ui._jobs.pop(token, None)
        if "error" in box:
            kind, text = error_text(box["error"])
            yield status_html(kind, text), keep, keep, keep, None
            return
        s = box["summary"]
        videos = sorted(p for p in folder.glob("*.mp4") if not p.name.startswith("."))
        gallery = []
        for v in videos:
            try:
                gallery.append((_first_frame(v), v.stem))
            except Exception:  # noqa: BLE001 - a thumbnail is only a picture; the video is listed anyway
                log.debug("no thumbnail for %s", v, exc_info=True)
        zip_path = _zip(folder)
        kind = "interrupted" if s.interrupted else ("done" if s.ok else "error")
        errors = "; ".join(s.errors[:3]) + (" ..." if len(s.errors) > 3 else "")
        text = f"{s.done} videos in {folder} ({s.seconds:.0f} s)" + (f"; {s.failed} failed: {errors}" if s.failed else "")
        if s.interrupted:
            text += "; interrupted (finished videos kept)"
        yield status_html(kind, text), gallery, [str(v) for v in videos] or None, str(zip_path), None


class HostWorker(Worker):
    """A :class:`~sadtalker_ext.batch.worker.Worker` whose jobs run under the host's job lock, with the
    host's engines (models stay loaded across the tab's runs) and the job's progress and stop flag."""

    def __init__(self, job_host):
        super().__init__(host_dir=job_host.models_dir(), name="tab")
        self.job_host = job_host
        self.index, self.current = 0, ""

    def engine(self, options):
        engine_for = getattr(self.job_host, "engine_for", None)
        return engine_for(options) if callable(engine_for) else super().engine(options)

    def run(self, job, out_dir, progress=None, should_stop=None):
        self.index += 1
        self.current = job.name
        with self.job_host.job("talking-head batch", 0):
            return super().run(job, out_dir, progress=self.job_host.progress, should_stop=self.job_host.interrupted)


def _upload_name(path: str) -> str:
    """The client's file name of an upload (gradio 4 keeps it; gradio 3 adds a random prefix folder
    or suffix, the name stays the last component)."""
    return Path(path).name


def _zip(folder: Path) -> Path:
    """``folder/batch.zip`` with the videos, sidecars and results.jsonl (written whole, then renamed)."""
    out = folder / "batch.zip"
    tmp = folder / ".batch.zip.part"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for p in sorted(folder.iterdir()):
            if p.suffix in (".mp4", ".json") or p.name == "results.jsonl":
                z.write(p, p.name)
    tmp.replace(out)
    return out


def _remove_empty(folder: Path) -> None:
    try:
        for p in folder.iterdir():
            if p.name != "jobs.csv":
                return
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    except OSError:
        pass


def build_batch_panel(ui) -> BatchPanel:
    """Build the section inside the tab's Blocks (after its settings exist) and wire its handler."""
    return BatchPanel(ui)


__all__ = ["BatchPanel", "build_batch_panel", "MAX_PORTRAITS"]
