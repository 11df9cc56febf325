"""Command line: ``python -m sadtalker_ext {generate,demo,batch,models,ui}`` (``ui``: the standalone web UI;
``batch``: a jobs file, see :mod:`sadtalker_ext.batch`).

Errors the user can fix print one line (``error: ...``) and exit with status 2; ``--debug``
shows the traceback instead. Ctrl-C stops the run, removes the partial output and exits 130.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from importlib import resources
from pathlib import Path

from ..errors import GenerationInterrupted, TalkingHeadError
from ..options import ENGINES, LIPSYNC, PHONEME_SOURCES, PRECISIONS, PREPROCESS, RESTORERS, GenerateOptions


def _add_generation_options(p: argparse.ArgumentParser) -> None:
    d = GenerateOptions()
    g = p.add_argument_group("generation")
    g.add_argument("--engine", choices=ENGINES, default=d.engine, help="animator (default: %(default)s)")
    g.add_argument("--preprocess", choices=PREPROCESS, default=d.preprocess, help="default: %(default)s")
    g.add_argument("--size", type=int, default=d.size, help="256 or 512 (default: %(default)s)")
    g.add_argument("--still", action="store_true", help="keep the head still (mouth, eyes and brows move)")
    g.add_argument("--pose-style", type=int, default=d.pose_style, help="head-motion style 0..45")
    g.add_argument("--expression-scale", type=float, default=d.expression_scale, help="0..3, scales face motion")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed; same seed = same video")
    g.add_argument("--face-index", type=int, default=d.face_index, help="which face, 0 = largest")
    g.add_argument("--no-blinks", action="store_true", help="disable eye blinks")
    g.add_argument("--phonemes", choices=PHONEME_SOURCES, default=d.phonemes,
                   help="mouth shapes from pocketsphinx alignment (English) or acoustics")
    g.add_argument("--transcript", default=None, help="text of the speech, for forced alignment")
    g.add_argument("--lipsync", choices=LIPSYNC, default=d.lipsync, help="Wav2Lip lip refinement")
    g.add_argument("--chunk-size", type=int, default=d.chunk_size, help="frames per streamed chunk")
    g.add_argument("--crf", type=int, default=d.crf, help="H.264 quality 0..51 (lower is better)")
    g.add_argument("--max-side", type=int, default=d.max_side, help="long-side cap of 'full' output, pixels")
    g.add_argument("--checkpoints", default=None, help="folder with model files (neural engines)")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="frames rendered per forward pass, sadtalker engine (default: %(default)s)")
    g.add_argument("--ref-eyeblink", default=None, metavar="VIDEO",
                   help="copy eye blinks from this video (sadtalker engine)")
    g.add_argument("--ref-pose", default=None, metavar="VIDEO",
                   help="copy head motion from this video (sadtalker engine)")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="fp16/bf16 renderer autocast on CUDA (default: %(default)s)")
    w = p.add_argument_group("lip-sync (Wav2Lip-UHQ)")
    w.add_argument("--pads", type=int, nargs=4, default=list(d.pads), metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="pixels added to the face box (default: %(default)s)")
    w.add_argument("--mouth-mask-dilate", type=float, default=d.mouth_mask_dilate, help="lip mask growth, px")
    w.add_argument("--face-mask-erode", type=float, default=d.face_mask_erode, help="face oval shrinkage, px")
    w.add_argument("--mask-blur", type=float, default=d.mask_blur, help="mask feathering, px")
    w.add_argument("--only-mouth", action="store_true", help="paste only the lips, not the lower face")
    w.add_argument("--restore", choices=RESTORERS, default=d.restore, help="face restoration of the refined region")
    w.add_argument("--restore-fidelity", type=float, default=d.restore_fidelity, help="CodeFormer fidelity 0..1")
    w.add_argument("--wav2lip-batch-size", type=int, default=d.wav2lip_batch_size, help="frames per Wav2Lip forward")
    w.add_argument("--lipsync-debug", default=None, metavar="DIR", help="write the masks/crops of one frame here")
    r = p.add_argument_group("img2img refinement")
    r.add_argument("--refine", default=None, metavar="KEYFRAMES_JSON",
                   help="refine the frames with Stable Diffusion img2img under this keyframe schedule")
    r.add_argument("--refine-mode", choices=("every", "keyframes"), default=None,
                   help="img2img on every frame (batched) or on keyframes only, carried by optical flow "
                        "(default: the schedule's, else keyframes)")
    r.add_argument("--sd-checkpoint", default=None, metavar="PATH",
                   help="SD model for refinement: .safetensors/.ckpt or diffusers folder")


def _options(args) -> GenerateOptions:
    return GenerateOptions(
        engine=args.engine, preprocess=args.preprocess, size=args.size, still=args.still,
        pose_style=args.pose_style, expression_scale=args.expression_scale, seed=args.seed,
        face_index=args.face_index, blinks=not args.no_blinks, phonemes=args.phonemes,
        transcript=args.transcript, language=getattr(args, "lang", "en") or "en", lipsync=args.lipsync, chunk_size=args.chunk_size, crf=args.crf,
        max_side=args.max_side, checkpoints=args.checkpoints, batch_size=args.batch_size,
        ref_eyeblink=args.ref_eyeblink, ref_pose=args.ref_pose, device=args.device,
        precision=args.precision, pads=tuple(args.pads), mouth_mask_dilate=args.mouth_mask_dilate,
        face_mask_erode=args.face_mask_erode, mask_blur=args.mask_blur, only_mouth=args.only_mouth,
        restore=args.restore, restore_fidelity=args.restore_fidelity,
        wav2lip_batch_size=args.wav2lip_batch_size, lipsync_debug=args.lipsync_debug,
        refine=getattr(args, "refine", None), refine_mode=getattr(args, "refine_mode", None),
        sd_checkpoint=getattr(args, "sd_checkpoint", None),
    ).validate()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sadtalker_ext",
                                description="Portrait + speech -> talking-head video.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    sub = p.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="make a video from a portrait and speech")
    src = gen.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="portrait (PNG/JPEG/WebP...)")
    src.add_argument("--video", help="a video to lip-sync instead of a portrait (re-talking)")
    speech = gen.add_mutually_exclusive_group(required=True)
    speech.add_argument("--audio", help="speech (wav/mp3/flac/ogg/m4a...)")
    speech.add_argument("--text", help="text to speak instead of --audio (offline speech synthesis, see --lang)")
    gen.add_argument("--out", required=True, help="output .mp4")
    _add_generation_options(gen)
    from ..audio.tts.cli import add_arguments as add_tts_arguments
    add_tts_arguments(gen)
    demo = sub.add_parser("demo", help="bundled inputs: astronaut photo + CMU ARCTIC a0007")
    demo.add_argument("--out", default="demo.mp4", help="output .mp4 (default: %(default)s)")
    _add_generation_options(demo)
    from .batch_cmd import add_parser as add_batch
    add_batch(sub, _add_generation_options)
    from .models_cmd import add_parser as add_models
    add_models(sub)
    ui = sub.add_parser("ui", help="serve the Talking Head web UI (and the HTTP API) without the WebUI")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    ui.add_argument("--port", type=int, default=7861, help="port (default: %(default)s)")
    ui.add_argument("--output-dir", default="outputs/talking-head", help="where videos are saved "
                    "(default: %(default)s)")
    ui.add_argument("--models-dir", default=None, help="folder with model files (searched after "
                    "$SADTALKER_CHECKPOINTS)")
    ui.add_argument("--auth", "--gradio-auth", "--api-auth", dest="auth", default=None, metavar="USER:PASS",
                    help="password for the page (gradio's login) and the HTTP API (Basic auth): "
                         "'user:pass' or 'user:pass,user2:pass2'; $TALKING_HEAD_AUTH when not given")
    ui.add_argument("--insecure", action="store_true",
                    help="allow a non-loopback --host without --auth (anyone who can reach it may use it)")
    ui.add_argument("--cors-origins", default=None, metavar="ORIGINS",
                    help="other sites whose pages may call this server, e.g. 'https://a.example,"
                         "http://b.example:8080' (default: none, same origin only)")
    ui.add_argument("--header-timeout", type=float, default=None, metavar="S",
                    help="close a connection that takes longer than this to send a request's headers "
                         "(default: 10)")
    return p


def demo_inputs():
    """(astronaut image uint8 RGB, path of the bundled ARCTIC wav)."""
    from skimage import data
    wav = resources.files("sadtalker_ext") / "assets" / "arctic_a0007.wav"
    return data.astronaut(), Path(str(wav))


def _progress_printer(quiet: bool):
    if quiet:
        return None
    state = {"t": time.perf_counter()}

    def progress(done, total, text, preview):
        now = time.perf_counter()
        if done == total or now - state["t"] > 0.5:
            state["t"] = now
            print(f"\r{text} ({100 * done // max(1, total)}%)", end="" if done < total else "\n",
                  file=sys.stderr, flush=True)
    return progress


def main(argv=None) -> int:
    stop = None
    if argv is None:  # run as a program (not called from Python): Ctrl-C safe during imports
        from . import sigint
        if sigint.install():
            stop = sigint.pressed
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        if args.command in ("models", "batch"):
            return args.func(args)
        if args.command == "ui":
            from ..ui.standalone import serve
            serve(args.host, args.port, args.output_dir, models_dir=args.models_dir,
                  auth=args.auth or os.environ.get("TALKING_HEAD_AUTH") or None, insecure=args.insecure,
                  cors_origins=args.cors_origins, header_timeout=args.header_timeout)
            return 0
        from ..io.video_writer import check_output_path
        from ..pipeline import Callbacks, generate
        opts = _options(args)
        check_output_path(args.out)  # before any work (speech synthesis, decoding, the render)
        video = None
        if args.command == "demo":
            image, audio = demo_inputs()
        else:
            image, audio, video = args.image, args.audio, args.video
        events = None
        if getattr(args, "text", None) is not None:
            from ..audio.tts.cli import speech_from_args
            audio, events, opts = speech_from_args(args, opts)
        result = generate(image, audio, args.out, opts,
                          callbacks=Callbacks(progress=_progress_printer(args.quiet), should_stop=stop),
                          video=video, phoneme_events=events)
        from ..jobs import describe_sources, write_sidecar
        sidecar = write_sidecar(result.path, result, opts, describe_sources(result, image, audio, video=video))
        if not args.quiet:
            print(f"wrote {result.path} and {sidecar.name} ({result.num_frames} frames, {result.duration:.2f} s, "
                  f"{result.size[0]}x{result.size[1]}, engine {result.engine}, {result.seconds:.1f} s)")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; no video was written", file=sys.stderr)
        return 130
    except GenerationInterrupted as exc:
        print(f"interrupted: {exc.message}", file=sys.stderr)
        return 130
    except TalkingHeadError as exc:
        if args.debug:
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
