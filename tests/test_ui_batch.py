"""The tab's Batch section (sadtalker_ext/ui/batch_panel.py) under gradio 3.41: portraits x one speech,
a text per portrait, a jobs file naming uploads, a portrait without a face, server paths refused;
results gallery, video list, zip. Runs the real lite engine on real photos (256 px, 1.2 s speech)."""
from __future__ import annotations

import json
import shutil
import uuid
import zipfile
from pathlib import Path

import pytest

import batch_inputs
from sadtalker_ext.host.base import LocalHost


@pytest.fixture()
def tab(tmp_path):
    from sadtalker_ext.ui.tab import build_blocks
    host = LocalHost(output_dir=tmp_path / "out", models_dir=tmp_path / "models")
    blocks = build_blocks(host)
    ui = blocks.talking_head_ui
    assert ui.batch is not None, "the Batch section did not build"
    return ui


@pytest.fixture()
def uploads(tmp_path):
    """The test inputs as gradio uploads (inside gradio's upload folder, where handlers may read)."""
    from sadtalker_ext.ui import guard
    folder = Path(guard.upload_roots()[0]) / f"th-test-{uuid.uuid4().hex}"
    ins = batch_inputs.write_inputs(tmp_path / "src")
    folder.mkdir(parents=True)
    out = {}
    for name, p in ins.items():
        out[name] = str(shutil.copy(p, folder / p.name))
    from skimage import data
    from PIL import Image
    Image.fromarray(data.chelsea()).save(folder / "chelsea.png")  # a cat: no human face
    out["chelsea"] = str(folder / "chelsea.png")
    yield out
    shutil.rmtree(folder, ignore_errors=True)


def _options(ui, **over):
    """The option components' values as the tab starts, with overrides (engine lite, 256 px, fast mouths)."""
    from sadtalker_ext.ui.controls import initial_value
    over = dict({"engine": "lite", "size": 256, "phonemes": "acoustic"}, **over)
    values = []
    for spec in ui.specs:
        values.append(over.get(spec.name, initial_value(spec)))
    return values


def _run(ui, images=None, audios=None, texts="", jobs=None, **over):
    updates = list(ui.batch.run(images, audios, texts, jobs, *_options(ui, **over)))
    return updates[-1], updates


def test_portraits_times_one_speech_with_gallery_and_zip(tab, uploads):
    imgs = [uploads["astronaut"], uploads["cameraman"], uploads["chelsea"]]
    (status, gallery, files, zip_path, token), updates = _run(tab, imgs, [uploads["speech"]])
    assert any(u[4] for u in updates[:-1]) and token is None  # the run had an interrupt token, released at the end
    assert "2 videos in" in status and "1 failed" in status and "no face" in status
    folder = Path(zip_path).parent
    assert folder.parent == Path(tab.host.output_dir()) and folder.name.startswith("batch-")
    assert sorted(Path(f).name for f in files) == ["001-astronaut.mp4", "002-cameraman.mp4"]
    assert len(gallery) == 2 and gallery[0][0].shape[2] == 3 and gallery[0][1] == "001-astronaut"
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(z.namelist())
    assert names == ["001-astronaut.json", "001-astronaut.mp4", "002-cameraman.json", "002-cameraman.mp4",
                     "results.jsonl"]
    recs = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    assert [(r["job"], r["status"], r["error_type"]) for r in recs] == [
        ("001-astronaut", "done", None), ("002-cameraman", "done", None), ("003-chelsea", "failed", "NoFaceError")]
    side = json.loads((folder / "001-astronaut.json").read_text())
    assert side["options"]["size"] == 256 and side["options"]["engine"] == "lite"


def test_a_text_per_portrait(tab, uploads):
    (status, gallery, files, zip_path, _), _ = _run(tab, [uploads["astronaut"], uploads["lfw-0"]], None,
                                                    "Hello there.\nGood morning to you.")
    assert "2 videos in" in status and "failed" not in status
    folder = Path(zip_path).parent
    texts = [json.loads((folder / f"{Path(f).stem}.json").read_text())["source"]["text"] for f in sorted(files)]
    assert texts == ["Hello there.", "Good morning to you."]
    # a line count that does not match is refused before anything runs
    (status, *_), _ = _run(tab, [uploads["astronaut"], uploads["lfw-0"], uploads["cameraman"]], None, "a\nb")
    assert "2 lines of text for 3 portraits" in status


def test_jobs_file_names_uploads_and_never_server_paths(tab, uploads, tmp_path):
    from sadtalker_ext.ui import guard
    secret = tmp_path / "secret.png"
    shutil.copy(uploads["astronaut"], secret)  # a real image on the server, outside the uploads
    jobs = Path(uploads["speech"]).parent / "jobs.csv"
    jobs.write_text("image,audio,output,seed\n"
                    f"astronaut-mirror.png,speech.wav,mirror,5\n"
                    f"{secret},speech.wav,stolen,\n"
                    f"astronaut.png,speech.wav,with-path-option,\n")
    # per-job options that name server files are refused by the tab's own rules
    jobs_json = Path(uploads["speech"]).parent / "jobs.json"
    jobs_json.write_text(json.dumps([{"image": "astronaut.png", "audio": "speech.wav", "output": "bad",
                                      "ref_pose": str(secret)}]))
    images = [uploads["astronaut"], uploads["astronaut-mirror"]]
    (status, gallery, files, zip_path, _), _ = _run(tab, images, [uploads["speech"]], "", jobs)
    assert isinstance(zip_path, str), status
    folder = Path(zip_path).parent
    recs = {json.loads(x)["job"]: json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()}
    assert recs["mirror"]["status"] == "done"
    assert json.loads((folder / "mirror.json").read_text())["seed"] == 5
    # the server path is looked up by its file name among the uploads: secret.png was not uploaded
    assert recs["stolen"]["status"] == "failed" and "'secret.png' was not uploaded" in recs["stolen"]["error"]
    assert recs["with-path-option"]["status"] == "done"
    (status, *_), _ = _run(tab, images, [uploads["speech"]], "", jobs_json)
    folder = sorted(Path(tab.host.output_dir()).glob("batch-*"))[-1]
    rec = json.loads((folder / "results.jsonl").read_text().splitlines()[0])
    assert rec["status"] == "failed" and rec["error_type"] == "ServerFileRefused"
    # a portrait that is a server file, not an upload, is refused before anything runs
    (status, *_), _ = _run(tab, [str(secret)], [uploads["speech"]])
    assert "not uploaded" in status or "refused" in status.lower()
    assert not guard.allowed(secret, guard.file_roots(tab.host))


def test_interrupt_stops_the_batch_and_keeps_finished_videos(tab, uploads):
    imgs = [uploads["astronaut"], uploads["cameraman"], uploads["lfw-0"], uploads["lfw-1"]]
    gen = tab.batch.run(imgs, [uploads["speech"]], "", None, *_options(tab))
    last, token = None, None
    for update in gen:
        last = update
        token = update[4] or token
        folder = sorted(Path(tab.host.output_dir()).glob("batch-*"))
        if token and folder and [p for p in folder[-1].glob("*.mp4") if not p.name.startswith(".")]:
            tab.interrupt(token)  # the tab's Interrupt button with this session's token
            token = None
    status = last[0]
    assert "interrupted" in status, status
    folder = sorted(Path(tab.host.output_dir()).glob("batch-*"))[-1]
    videos = [p for p in folder.glob("*.mp4") if not p.name.startswith(".")]
    assert 1 <= len(videos) < 4 and not list(folder.glob(".*.part*"))
