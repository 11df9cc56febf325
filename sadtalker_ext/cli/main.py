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
from dataclasses import fields
from importlib import resources
from pathlib import Path

from ..errors import GenerationInterrupted, TalkingHeadError
from ..options import STAGES, GenerateOptions, flag_of, spec_of


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _add_generation_options(p: argparse.ArgumentParser) -> None:
    """One flag per option of :func:`sadtalker_ext.options.schema` that has one, in argument groups by stage."""
    groups = {}
    for f in fields(GenerateOptions):
        spec = spec_of(f)
        flag = flag_of(f.name, spec) if spec is not None else None
        if flag is None:
            continue
        title = STAGES[spec.stage]
        g = groups.get(title) or groups.setdefault(title, p.add_argument_group(title))
        kw = dict(help=spec.help or None, dest=_dest(flag))
        if isinstance(f.default, bool):
            kw["action"] = "store_true"
        else:
            kw["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
            if isinstance(f.default, tuple):
                kw.update(type=type(f.default[0]), nargs=len(f.default))
            elif isinstance(f.default, (int, float)):
                kw["type"] = type(f.default)
            if spec.choices and spec.cli_choices:
                kw["choices"] = spec.choices
            if spec.metavar is not None:
                kw["metavar"] = spec.metavar
        g.add_argument(flag, **kw)


def _options(args) -> GenerateOptions:
    data = {}
    for f in fields(GenerateOptions):
        spec = spec_of(f)
        flag = flag_of(f.name, spec) if spec is not None else None
        if flag is None or not hasattr(args, _dest(flag)):
            continue
        v = getattr(args, _dest(flag))
        data[f.name] = (not v if spec.invert else tuple(v) if isinstance(f.default, tuple) and v is not None
                        else v)
    data["language"] = getattr(args, "lang", None) or GenerateOptions().language
    return GenerateOptions(**data).validate()


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
