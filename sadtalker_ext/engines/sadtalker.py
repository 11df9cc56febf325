"""The SadTalker engine: 3DMM motion from audio and the face-vid2vid renderer, with the official weights.

Data flow (OpenTalker/SadTalker ``inference.py``, re-implemented; the networks are ours and load the
official files unchanged):

1. :meth:`SadTalkerEngine.prepare` - mediapipe landmarks -> SadTalker's face crop
   (:func:`~sadtalker_ext.face.align3d.sadtalker_crop`; ``crop``/``full``: the oriented face
   square, ``extcrop``/``extfull``: the square plus a 10% border, ``resize``: the whole image), the
   crop resized to ``size`` x ``size`` (the renderer's source image) -> the 224 x 224 alignment
   -> ReconNet -> the source's 73 coefficients (exp 64, angles 3, translation 3, crop
   parameters 3) -> KPDetector canonical keypoints and MappingNet source keypoints.
2. :meth:`SadTalkerEngine.motion` - mel windows -> ExpNet (with the blink ratio or a reference
   video's expressions) + PoseVAE (pose style, seeded noise) -> ``[T, 70]`` coefficients
   (Savitzky-Golay smoothed pose), a reference video's head motion added (``--ref-pose``), the
   expression scaled, still mode, and for ``full``/``extfull`` the 3 crop parameters appended (73).
3. :meth:`SadTalkerEngine.frames` - per batch of ``batch_size`` frames: 27-frame coefficient
   windows -> MappingNet -> keypoint transformation -> renderer; each batch leaves the device as
   soon as it is rendered and is resized (or pasted back into the full image) and streamed in
   chunks of ``chunk_size`` frames, so memory does not grow with the audio length.

Mapping net: ``mapping_00229-model.pth.tar`` (70 coefficients) for crop/extcrop/resize and
``mapping_00109-model.pth.tar`` (73) for full/extfull, as the official ``init_path`` chooses.
Weights: ``SadTalker_V0.0.2_256.safetensors`` for ``--size 256`` and ``_512`` for 512 (when only
the 256 file is present, size 512 renders at 256 and up-scales, with a warning).

Loaded modules are cached per process (:data:`sadtalker_ext.models.cache.MODELS`; its release frees them), so the 725 MB file is
read once however many runs and engine instances there are. ``--seed`` makes a run repeatable:
the PoseVAE noise comes from a ``torch.Generator`` and the blink schedule from a ``random.Random``,
both seeded with it.

Why one module of ~600 lines: it is one engine's three-step interface (``prepare`` / ``motion`` /
``frames``) over one bundle of loaded networks (``_Models``) and its two per-run records
(:class:`SadTalkerSource`, :class:`SadTalkerMotion`); the networks, the mel features, the face crop and
the paste-back already live in their stage packages (``motion/sadtalker``, ``render/facevid2vid``,
``audio``, ``face``), and what remains here is the glue between them that each step shares.
"""
from __future__ import annotations

import logging
import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch

from ..audio.mel import prepare_sadtalker_audio
from ..errors import CheckpointError, InputError, OptionError, VideoError
from ..face import align3d
from ..face.crop import PasteBack
from ..face.landmarks import detect_faces, find_face
from ..models import locate
from ..models.cache import MODELS, resolve_device, resolve_dtype
from ..models.loading import SafetensorsCheckpoint
from ..options import PREPROCESS, GenerateOptions
from .base import FrameChunk, RunContext

log = logging.getLogger(__name__)

CHECKPOINT_256 = "SadTalker_V0.0.2_256.safetensors"
CHECKPOINT_512 = "SadTalker_V0.0.2_512.safetensors"
MAPPING_CROP = "mapping_00229-model.pth.tar"   # 70 coefficients: crop, extcrop, resize
MAPPING_FULL = "mapping_00109-model.pth.tar"   # 73 coefficients: full, extfull
PREPROCESS_MODES = PREPROCESS  # the options' (sadtalker_ext.options.PREPROCESS)
REF_VIDEO_SIZE = 256  # the official code extracts reference-video coefficients at 256 px
FEATHER = 0.06        # paste-back feather width, fraction of the pasted box's side


# ------------------------------------------------------------------------------------------------
# process-wide model cache
# ------------------------------------------------------------------------------------------------

def _cached(key: tuple, build: Callable[[], Any]) -> Any:
    """A SadTalker module from the process's model cache (:data:`sadtalker_ext.models.cache.MODELS`)."""
    return MODELS.get(("sadtalker",) + key, build)


def release_models() -> None:
    """Drop every cached model (SadTalker's and the others: one :meth:`ModelCache.release`) and free the
    CUDA cache. The next run reloads them."""
    MODELS.release()


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def cpu_has_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles: oneDNN then runs the
    renderer's convolutions in bf16, about 3x faster than fp32 on 2 cores); emulated bf16 is slower
    than fp32, so ``--precision bf16`` falls back to fp32 elsewhere."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(c()) for c in checks if c is not None)


def _make_renderer(generator, device: torch.device, dtype: torch.dtype):
    """The run's face renderer: on the CPU the path (fast or plain forward) is picked per run by
    measuring both (:mod:`..render.facevid2vid.adaptive`), elsewhere the fast renderer."""
    from ..render.facevid2vid.adaptive import make_renderer
    return make_renderer(generator, device, dtype)


@dataclass
class _Models:
    """The networks of one run (shared, cached modules)."""

    checkpoint: Path
    mapping_file: Path
    device: torch.device
    dtype: torch.dtype
    audio2coeff: Any
    recon: Any
    kp_detector: Any
    mapping: Any
    renderer: Any
    lock: threading.Lock
    render_size: int


# ------------------------------------------------------------------------------------------------
# run state
# ------------------------------------------------------------------------------------------------

@dataclass
class SadTalkerSource:
    """What :meth:`SadTalkerEngine.prepare` found out about the portrait.

    picture: uint8 RGB ``[S, S, 3]``, the renderer's source image (S = render size, 256/512).
    coeffs: float32 ``[73]`` source coefficients (exp 64, angles 3 in radians, translation 3, crop
        parameters s, tx, ty). box: (x0, y0, x1, y1) of the animated region in the working image.
    output_size: (width, height) of the output frames. paste: how frames go back into the full
    image (full/extfull), else None. kp_canonical / kp_source: ``[1, 15, 3]`` keypoints.
    """

    mode: str
    picture: np.ndarray
    coeffs: np.ndarray
    box: Tuple[int, int, int, int]
    output_size: Tuple[int, int]
    paste: Optional[PasteBack]
    kp_canonical: torch.Tensor
    kp_source: torch.Tensor
    models: _Models
    token: object = field(default_factory=object)

    @property
    def num_coeffs(self) -> int:
        """70 (crop/extcrop/resize) or 73 (full/extfull): the MappingNet input width."""
        return 73 if "full" in self.mode else 70


@dataclass
class SadTalkerMotion:
    """Per-frame coefficients ``[T, 70 or 73]`` float32 (exp 64, pose 6, crop parameters 3)."""

    coeffs: np.ndarray
    info: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.coeffs.shape[0])


def source_tensor(picture: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``[S, S, 3]`` -> float32 ``[1, 3, S, S]`` in [0, 1], the KPDetector / generator input.

    Scaled as the official ``get_facerender_data`` does (skimage ``img_as_float32``: ``x * float32(1/255)``,
    which differs from ``x / 255`` by one float32 ulp for some values; the generator turns that 6e-8 into
    1.3e-5 on its output frame).
    """
    chw = np.ascontiguousarray(picture.transpose(2, 0, 1), dtype=np.float32)
    chw *= np.float32(1.0 / 255.0)
    return torch.from_numpy(chw)[None]


def _even(n: float) -> int:
    return max(2, int(round(n / 2.0)) * 2)


def _feather_mask(box: Tuple[int, int, int, int], image_size: Tuple[int, int]) -> np.ndarray:
    """float32 ``[h, w, 1]`` blend weight: 1 inside, fading to 0 at the box edges that lie inside
    the image (edges on the image border stay 1)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    W, H = image_size
    ramp = max(2.0, FEATHER * min(w, h))
    xs = np.arange(w, dtype=np.float32) + 0.5
    ys = np.arange(h, dtype=np.float32) + 0.5
    fx = np.ones(w, np.float32)
    fy = np.ones(h, np.float32)
    if x0 > 0:
        fx = np.minimum(fx, xs / ramp)
    if x1 < W:
        fx = np.minimum(fx, (w - xs) / ramp)
    if y0 > 0:
        fy = np.minimum(fy, ys / ramp)
    if y1 < H:
        fy = np.minimum(fy, (h - ys) / ramp)
    m = np.clip(fy[:, None] * fx[None, :], 0.0, 1.0)
    m = m * m * (3 - 2 * m)  # smoothstep
    return m.astype(np.float32)[..., None]


def _resize(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    w, h = size
    if img.shape[1] == w and img.shape[0] == h:
        return np.ascontiguousarray(img)
    shrink = w < img.shape[1] or h < img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _tile(rows: np.ndarray, n: int) -> np.ndarray:
    """``rows`` ``[N, C]`` repeated / cut to ``[n, C]`` (the official reference-video tiling)."""
    if rows.shape[0] >= n:
        return rows[:n]
    reps = -(-n // rows.shape[0])
    return np.concatenate([rows] * reps, axis=0)[:n]


# ------------------------------------------------------------------------------------------------
# the engine
# ------------------------------------------------------------------------------------------------

class SadTalkerEngine:
    """SadTalker with our networks and the official weights (see the module docstring).

    Args:
        checkpoints: folder searched first for the official files (then ``SADTALKER_CHECKPOINTS``,
            the host folder, ``checkpoints/``; see :mod:`sadtalker_ext.models.locate`).
        host_dir: the host's model folder (e.g. ``<webui>/models/SadTalker``).
        device: torch device; default: ``options.device`` ("auto": CUDA when available, else CPU).
        precision: "fp32", "fp16" or "bf16"; default: ``options.precision``. Reduced precision
            applies to the renderer's per-frame part on CUDA, and bf16 also on a CPU with native
            bfloat16 (:func:`cpu_has_bf16`: about 3x faster, PSNR ~33 dB against the fp32 frame);
            otherwise the CPU falls back to fp32.

    Raises (from ``prepare``/``motion``/``frames``): CheckpointError (a file is missing or does
    not match; the message names it and what to download), NoFaceError, OptionError,
    VideoError (a reference video cannot be read or shows no face).
    """

    name = "sadtalker"

    def __init__(self, checkpoints: Optional[str] = None, host_dir=None,
                 device: Optional[str] = None, precision: Optional[str] = None):
        self.checkpoints = checkpoints
        self.host_dir = host_dir
        self.device = device
        self.precision = precision

    # -- files and modules ------------------------------------------------------------------------
    def _find(self, name: str) -> Optional[Path]:
        return locate.find_file(name, checkpoints=self.checkpoints, host_dir=self.host_dir)

    def _require(self, name: str) -> Path:
        return locate.require_file(name, checkpoints=self.checkpoints, host_dir=self.host_dir)

    def _checkpoint_for(self, size: int) -> Tuple[Path, int]:
        """(safetensors file, render size) for the requested output size."""
        if size == 512:
            p = self._find(CHECKPOINT_512)
            if p is not None:
                return p, 512
            p256 = self._find(CHECKPOINT_256)
            if p256 is not None:
                from ..models.locate import download_hint
                log.warning("%s not found: rendering at 256 px and up-scaling to 512; for true 512 px output, %s",
                            CHECKPOINT_512, download_hint("sadtalker"))
                return p256, 256
            return self._require(CHECKPOINT_512), 512
        return self._require(CHECKPOINT_256), 256

    def resolve_device(self, options: GenerateOptions) -> Tuple[torch.device, torch.dtype]:
        """The torch device and renderer dtype for ``options`` (constructor arguments win)."""
        dev = resolve_device(self.device or options.device or "auto")
        # bf16 also on a CPU that computes it natively (opt-in: ~3x faster renderer, ~33 dB PSNR vs fp32)
        dtype = resolve_dtype(self.precision or options.precision or "fp32", dev, cpu_bf16=cpu_has_bf16)
        return dev, dtype

    def _models(self, options: GenerateOptions) -> _Models:
        mode = options.preprocess
        ckpt_path, render_size = self._checkpoint_for(options.size)
        mapping_path = self._require(MAPPING_FULL if "full" in mode else MAPPING_CROP)
        dev, dtype = self.resolve_device(options)
        ck_key = _file_key(ckpt_path)
        map_key = _file_key(mapping_path)
        st = SafetensorsCheckpoint(ckpt_path)

        def audio2coeff():
            from ..motion.sadtalker.loaders import load_audio2coeff
            a2c = load_audio2coeff(st)
            a2c.exp_net.to(dev)
            a2c.pose_net.to(dev)
            return a2c

        def recon():
            from ..face.recon_net import load_recon_net
            return load_recon_net(st).to(dev)

        def kp():
            from ..render.facevid2vid.checkpoint import load_kp_detector
            return load_kp_detector(st, device=dev)

        def mapping():
            from ..motion.sadtalker.loaders import load_mapping
            return load_mapping(mapping_path).to(dev)

        def renderer():
            from ..render.facevid2vid.checkpoint import load_generator
            return (_make_renderer(load_generator(st, device=dev), dev, dtype), threading.Lock())

        mapping_net = _cached(("mapping", map_key, str(dev)), mapping)
        want = 73 if "full" in mode else 70
        if mapping_net.coeff_nc != want:
            raise CheckpointError(
                f"Checkpoint {mapping_path} is a {mapping_net.coeff_nc}-coefficient mapping net but "
                f"--preprocess {mode} needs {want}; download "
                f"{MAPPING_FULL if want == 73 else MAPPING_CROP} from the SadTalker release")
        rend, lock = _cached(("renderer", ck_key, str(dev), str(dtype)), renderer)
        return _Models(
            checkpoint=ckpt_path, mapping_file=mapping_path, device=dev, dtype=dtype,
            audio2coeff=_cached(("audio2coeff", ck_key, str(dev)), audio2coeff),
            recon=_cached(("recon", ck_key, str(dev)), recon),
            kp_detector=_cached(("kp", ck_key, str(dev)), kp),
            mapping=mapping_net,
            renderer=rend, lock=lock, render_size=render_size)

    # -- preprocessing ------------------------------------------------------------------------------
    def _coeffs_of(self, models: _Models, pictures: List[np.ndarray],
                   landmarks: List[np.ndarray]) -> np.ndarray:
        """73 coefficients per picture ``[N, 73]`` float32 (ReconNet on the 224 alignment)."""
        from ..face.recon_net import sadtalker_coeffs
        aligned = [align3d.align_for_recon(p, lm) for p, lm in zip(pictures, landmarks)]
        out = []
        for i in range(0, len(aligned), 16):
            batch = np.stack([a.as_float() for a in aligned[i:i + 16]])
            with torch.inference_mode():
                c = models.recon(torch.from_numpy(batch).to(models.device))
                out.append(sadtalker_coeffs(c).float().cpu().numpy())
        coeffs70 = np.concatenate(out, axis=0)
        crop = np.stack([a.crop_params for a in aligned]).astype(np.float32)
        return np.concatenate([coeffs70, crop], axis=1).astype(np.float32)

    def prepare(self, image: np.ndarray, options: GenerateOptions) -> SadTalkerSource:
        """Crop, 3DMM coefficients and source keypoints of the portrait (see module docstring).

        image: uint8 RGB ``[H, W, 3]``. Raises NoFaceError, OptionError, CheckpointError.
        """
        mode = options.preprocess
        if mode not in PREPROCESS_MODES:
            raise OptionError(f"--preprocess {mode!r} is not valid for the sadtalker engine; use one "
                              f"of {', '.join(PREPROCESS_MODES)}")
        face = find_face(image, options.face_index)
        models = self._models(options)
        try:
            return self._prepare(image, face, models, options)
        finally:
            if models.device.type == "cuda":
                torch.cuda.empty_cache()

    def _prepare(self, image: np.ndarray, face, models: _Models,
                 options: GenerateOptions) -> SadTalkerSource:
        mode = options.preprocess
        h, w = image.shape[:2]
        work = image
        points = face.points
        if "full" in mode:
            s = min(1.0, options.max_side / max(h, w))
            if s < 1.0:
                work = cv2.resize(image, (int(round(w * s)), int(round(h * s))),
                                  interpolation=cv2.INTER_AREA)
                points = points * s
            work = np.ascontiguousarray(work[: work.shape[0] // 2 * 2, : work.shape[1] // 2 * 2])
        wh, ww = work.shape[:2]
        lm = align3d.landmarks68(points)
        if mode == "resize":
            box = (0, 0, ww, wh)
        else:
            box = align3d.sadtalker_crop(lm, (ww, wh)).box(mode)
        x0, y0, x1, y1 = box
        size = models.render_size
        picture = _resize(work[y0:y1, x0:x1], (size, size))
        lm_pic = (lm - np.array([x0, y0])) * np.array([size / (x1 - x0), size / (y1 - y0)])
        coeffs = self._coeffs_of(models, [picture], [lm_pic])[0]
        out_w = options.size
        paste = None
        if "full" in mode:
            output_size = (ww, wh)
            paste = PasteBack(image=work, box=box, mask=_feather_mask(box, (ww, wh)))
        else:
            output_size = (_even(out_w), _even(out_w * (y1 - y0) / (x1 - x0)))
        from ..motion.sadtalker.mapping import source_window
        from ..render.facevid2vid.keypoints import keypoint_transformation
        nc = 73 if "full" in mode else 70
        with torch.inference_mode():
            src = source_tensor(picture)
            kp_canonical = models.kp_detector(src.to(models.device))
            he = models.mapping(torch.from_numpy(source_window(coeffs[:nc])).to(models.device))
            kp_source = keypoint_transformation(kp_canonical, he)
        return SadTalkerSource(mode=mode, picture=picture, coeffs=coeffs, box=box,
                               output_size=output_size, paste=paste, kp_canonical=kp_canonical,
                               kp_source=kp_source, models=models)

    def output_size(self, source: SadTalkerSource) -> Tuple[int, int]:
        return source.output_size

    # -- reference videos ---------------------------------------------------------------------------
    def video_coeffs(self, path: str, models: _Models, mode: str, max_frames: int,
                     what: str = "--ref-pose") -> np.ndarray:
        """73 coefficients per frame ``[N, 73]`` of a reference video (N <= ``max_frames``).

        Same preprocessing as the portrait, as the official code does it: the crop is found on the
        first frame and used for every frame, each crop is resized to 256 x 256 and its landmarks
        are found again (a frame without a face reuses the previous frame's landmarks). Frames
        are taken in order at 25 fps (the official code ignores the video's own rate).

        Raises VideoError: unreadable video, no frames, or no face in the first frame.
        """
        from ..io.probe import read_frames
        if not os.path.isfile(path):
            raise VideoError(f"{what} video {path} was not found; give the path of a video file")
        size = REF_VIDEO_SIZE
        pictures: List[np.ndarray] = []
        lms: List[np.ndarray] = []
        box = None
        try:
            for frame in read_frames(path):
                if len(pictures) >= max_frames:
                    break
                if box is None:
                    faces = detect_faces(frame)
                    if not faces:
                        raise VideoError(f"no face found in the first frame of the {what} video "
                                         f"{path}; use a video that starts with a visible face")
                    fh, fw = frame.shape[:2]
                    lm_full = align3d.landmarks68(faces[0].points)
                    box = (0, 0, fw, fh) if mode == "resize" else \
                        align3d.sadtalker_crop(lm_full, (fw, fh)).box(mode)
                x0, y0, x1, y1 = box
                pic = _resize(np.ascontiguousarray(frame[y0:y1, x0:x1]), (size, size))
                found = detect_faces(pic)
                if found:
                    lm = align3d.landmarks68(found[0].points)
                elif lms:
                    lm = lms[-1]
                else:
                    lm = (align3d.landmarks68(faces[0].points) - np.array([x0, y0])) * \
                        np.array([size / (x1 - x0), size / (y1 - y0)])
                pictures.append(pic)
                lms.append(lm)
        except (VideoError, InputError):
            raise
        except Exception as exc:  # PyAV raises its own error types
            raise VideoError(f"the {what} video {path} cannot be read ({type(exc).__name__}); "
                             f"convert it to MP4 (H.264)") from None
        if not pictures:
            raise VideoError(f"the {what} video {path} has no frames; give a video with a face")
        return self._coeffs_of(models, pictures, lms)

    # -- motion -------------------------------------------------------------------------------------
    def motion(self, source: SadTalkerSource, ctx: RunContext) -> SadTalkerMotion:
        """Coefficients for every frame ``[T, 70|73]`` (T = ``ctx.num_frames``).

        Raises AudioError (empty audio), VideoError (reference videos), OptionError.
        """
        opts = ctx.options
        models = source.models
        t = ctx.num_frames
        audio = prepare_sadtalker_audio(ctx.audio.samples, ctx.audio.sample_rate, ctx.fps,
                                        num_frames=t)
        seed = int(opts.seed)
        ref = np.repeat(source.coeffs[None, :70], t, axis=0)
        blink_mode = "off"
        if opts.ref_eyeblink:
            eye = self.video_coeffs(opts.ref_eyeblink, models, source.mode, t, "--ref-eyeblink")
            ref[:, :64] = _tile(eye[:, :64], t)
            ratio = np.zeros((t, 1), np.float32)
            blink_mode = "reference video"
        elif opts.blinks and not opts.still:
            from ..motion.sadtalker.blink import random_blink_ratio
            ratio = random_blink_ratio(t, random.Random(seed)).astype(np.float32)
            blink_mode = "random"
        else:
            ratio = np.zeros((t, 1), np.float32)
        ref_pose = None
        if opts.ref_pose:
            if opts.ref_pose == opts.ref_eyeblink:
                ref_pose = eye
            else:
                ref_pose = self.video_coeffs(opts.ref_pose, models, source.mode, t, "--ref-pose")
        gen = torch.Generator().manual_seed(seed)
        try:
            coeffs = models.audio2coeff.generate(audio.indiv_mels, ref, ratio, int(opts.pose_style),
                                                 generator=gen, ref_pose_coeffs=ref_pose)
        finally:
            if models.device.type == "cuda":
                torch.cuda.empty_cache()
        coeffs = np.array(coeffs, dtype=np.float32, copy=True)
        coeffs[:, :64] *= float(opts.expression_scale)
        if source.num_coeffs == 73:
            coeffs = np.concatenate([coeffs, np.repeat(source.coeffs[None, 70:73], t, axis=0)],
                                    axis=1)
        if opts.still:
            coeffs[:, 64:] = source.coeffs[64:source.num_coeffs]
        info = {"blinks": blink_mode, "pose_style": int(opts.pose_style), "seed": seed,
                "ref_pose": bool(ref_pose is not None)}
        ctx.info["sadtalker"] = {
            "checkpoint": models.checkpoint.name, "mapping": models.mapping_file.name,
            "device": str(models.device), "precision": str(models.dtype).replace("torch.", ""),
            "render_size": models.render_size, "preprocess": source.mode, "box": source.box,
            **info}
        return SadTalkerMotion(coeffs=coeffs, info=info)

    # -- frames -------------------------------------------------------------------------------------
    def _driving_keypoints(self, source: SadTalkerSource, coeffs: np.ndarray, start: int,
                           stop: int) -> torch.Tensor:
        """``[stop-start, 15, 3]`` driving keypoints (27-frame windows -> MappingNet -> transform)."""
        from ..motion.sadtalker.mapping import SEMANTIC_RADIUS
        from ..render.facevid2vid.keypoints import keypoint_transformation
        m = source.models
        r = SEMANTIC_RADIUS
        idx = np.clip(np.arange(start, stop)[:, None] + np.arange(-r, r + 1)[None, :], 0,
                      coeffs.shape[0] - 1)
        windows = np.ascontiguousarray(coeffs[idx].transpose(0, 2, 1), dtype=np.float32)
        with torch.inference_mode():
            he = m.mapping(torch.from_numpy(windows).to(m.device))
            return keypoint_transformation(source.kp_canonical, he)

    def _to_frames(self, source: SadTalkerSource, pred: torch.Tensor) -> np.ndarray:
        """``[b, 3, S, S]`` float in [0, 1] -> uint8 ``[b, H, W, 3]`` output frames."""
        arr = pred.detach().float().cpu().numpy().transpose(0, 2, 3, 1)
        arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
        w, h = source.output_size
        out = np.empty((arr.shape[0], h, w, 3), np.uint8)
        for i, face in enumerate(arr):
            if source.paste is not None:
                source.paste.apply(face, out=out[i])
            else:
                out[i] = _resize(face, (w, h))
        return out

    def frames(self, source: SadTalkerSource, motion: SadTalkerMotion,
               ctx: RunContext) -> Iterator[FrameChunk]:
        """Render ``len(motion)`` frames in batches of ``batch_size``, yield chunks of
        ``chunk_size`` uint8 frames ``[n, H, W, 3]`` as soon as they are complete."""
        m = source.models
        n = len(motion)
        bs = int(ctx.options.batch_size)
        step = int(ctx.options.chunk_size)
        w, h = source.output_size
        buf = np.empty((min(step, n), h, w, 3), np.uint8)
        filled = 0
        start = 0
        src_img = None
        try:
            for b0 in range(0, n, bs):
                b1 = min(n, b0 + bs)
                kp_d = self._driving_keypoints(source, motion.coeffs, b0, b1)
                with m.lock:
                    if getattr(m.renderer, "_sadtalker_owner", None) is not source.token:
                        if src_img is None:
                            src_img = source_tensor(source.picture)
                        m.renderer.prepare_source(src_img, source.kp_source)
                        m.renderer._sadtalker_owner = source.token
                    pred = m.renderer.render(kp_d)
                del kp_d
                frames = self._to_frames(source, pred)
                del pred
                i = 0
                while i < len(frames):
                    take = min(len(frames) - i, buf.shape[0] - filled)
                    buf[filled:filled + take] = frames[i:i + take]
                    filled += take
                    i += take
                    if filled == buf.shape[0]:
                        yield FrameChunk(start=start, frames=buf.copy())
                        start += filled
                        filled = 0
                        buf = np.empty((min(step, n - start), h, w, 3), np.uint8) \
                            if start < n else buf
            if filled:
                yield FrameChunk(start=start, frames=buf[:filled].copy())
        finally:
            if m.device.type == "cuda":
                torch.cuda.empty_cache()


__all__ = ["CHECKPOINT_256", "CHECKPOINT_512", "MAPPING_CROP", "MAPPING_FULL", "PREPROCESS_MODES",
           "SadTalkerEngine", "SadTalkerMotion", "SadTalkerSource", "release_models"]
