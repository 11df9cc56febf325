"""Regenerate tests/goldens/sadtalker_e2e_*.npz from the official SadTalker code.

Runs OpenTalker/SadTalker at cd4c0465ae0b54a6f85af57f5c65fec9fe23e7f8 itself (imported from a checkout,
nothing copied), with the synthetic weights of ``shared/reference/synth_ckpt.py``:

* ``src.generate_facerender_batch.get_facerender_data`` on a 256 x 256 source picture, the reference
  goldens' source coefficients (``audio2exp.npz`` ``first_coeff``) and 64 frames of generated
  coefficients (``audio2coeff.npz`` ``coeff_3dmm[:64]``), for three settings: crop with
  expression_scale 1, crop with expression_scale 0.6 and still mode, full (73 coefficients) with
  expression_scale 1.3 -> the MappingNet source and target semantics of every frame;
* ``src.facerender.modules.make_animation.make_animation`` (KPDetector, MappingNet 00229,
  OcclusionAwareSPADEGenerator built from ``src/config/facerender.yaml``, the weights selected from
  the safetensors file by the official substring rule) on the first setting, batch size 4 -> the
  256 x 256 predictions of all 64 frames, before any paste-back. Four frames are stored whole
  (0, 13, 31, 63); every frame's mean / std and a 32 x 32 area-downscaled copy are stored too.

Usage (a scratch venv with torch==2.13.0 CPU, numpy, scipy, scikit-image, pillow, safetensors, pyyaml)::

    /work/scratch/official-venv/bin/python tests/goldens/make_sadtalker_e2e.py \\
        --sadtalker /path/to/SadTalker-checkout --checkpoints /path/to/synthetic-ckpts

One thread, float32, eval() under no_grad (as the reference goldens). About 10 min on one CPU core.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REF = HERE.parents[2] / "shared" / "reference"
COMMIT = "cd4c0465ae0b54a6f85af57f5c65fec9fe23e7f8"
FRAMES = 64
BATCH = 4
KEPT = (0, 13, 31, 63)
SETTINGS = {  # name: (preprocess, expression_scale, still)
    "crop": ("crop", 1.0, False),
    "crop_still": ("crop", 0.6, True),
    "full": ("full", 1.3, False),
}


def source_picture() -> np.ndarray:
    """astronaut()[0:240, 105:345] resized to 256 x 256 (PIL bicubic), uint8 RGB."""
    from PIL import Image
    from skimage import data
    return np.asarray(Image.fromarray(data.astronaut()[0:240, 105:345]).resize((256, 256), Image.BICUBIC))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sadtalker", required=True, type=Path, help=f"SadTalker checkout at {COMMIT}")
    ap.add_argument("--checkpoints", required=True, type=Path, help="synth_ckpt.py output folder")
    ap.add_argument("--reference", type=Path, default=REF)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--batch1-only", action="store_true",
                    help="only write sadtalker_e2e_batch1.npz (frame 0 at batch size 1; about 1 min)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.sadtalker))

    import scipy.io as scio
    import safetensors.torch
    import torch
    import yaml
    from PIL import Image
    from src.facerender.modules.generator import OcclusionAwareSPADEGenerator
    from src.facerender.modules.keypoint_detector import KPDetector
    from src.facerender.modules.make_animation import make_animation
    from src.facerender.modules.mapping import MappingNet
    from src.generate_facerender_batch import get_facerender_data

    torch.set_num_threads(1)
    first = np.load(args.reference / "goldens" / "audio2exp.npz")["first_coeff"].astype(np.float32)  # [1, 73]
    coeffs = np.load(args.reference / "goldens" / "audio2coeff.npz")["coeff_3dmm"][:FRAMES].astype(np.float32)
    picture = source_picture()

    tmp = Path(tempfile.mkdtemp(prefix="sadtalker-e2e-"))
    pic_path = tmp / "source.png"
    Image.fromarray(picture).save(pic_path)
    scio.savemat(tmp / "first.mat", {"coeff_3dmm": first})
    scio.savemat(tmp / "generated.mat", {"coeff_3dmm": coeffs})

    windows = {}
    data_crop = None
    for name, (pre, scale, still) in SETTINGS.items():
        data = get_facerender_data(str(tmp / "generated.mat"), str(pic_path), str(tmp / "first.mat"),
                                   str(tmp / "none.wav"), BATCH, expression_scale=scale, still_mode=still,
                                   preprocess=pre, size=256)
        tgt = data["target_semantics_list"].numpy()  # [BATCH, steps, C, 27], batch-major frame order
        tgt = tgt.reshape(-1, tgt.shape[-2], tgt.shape[-1])[:FRAMES]
        windows[f"{name}_source_semantics"] = data["source_semantics"][:1].numpy()
        windows[f"{name}_target_semantics"] = tgt
        if name == "crop":
            data_crop = data

    with open(args.sadtalker / "src" / "config" / "facerender.yaml") as f:
        cfg = yaml.safe_load(f)["model_params"]
    generator = OcclusionAwareSPADEGenerator(**cfg["generator_params"], **cfg["common_params"])
    kp_detector = KPDetector(**cfg["kp_detector_params"], **cfg["common_params"])
    mapping = MappingNet(**cfg["mapping_params"])
    st = safetensors.torch.load_file(str(args.checkpoints / "SadTalker_V0.0.2_256.safetensors"))
    for module, word in ((generator, "generator"), (kp_detector, "kp_extractor")):
        module.load_state_dict({k.replace(word + ".", ""): v for k, v in st.items() if word in k})
    mapping.load_state_dict(torch.load(args.checkpoints / "mapping_00229-model.pth.tar",
                                       weights_only=True)["mapping"])
    for m in (generator, kp_detector, mapping):
        m.eval()
    del st

    # batch size 1, first step only (= frame 0): the official code's own batch-size spread
    from src.facerender.modules.make_animation import keypoint_transformation
    d1 = get_facerender_data(str(tmp / "generated.mat"), str(pic_path), str(tmp / "first.mat"),
                             str(tmp / "none.wav"), 1, expression_scale=1.0, still_mode=False,
                             preprocess="crop", size=256)
    p1 = make_animation(d1["source_image"], d1["source_semantics"], d1["target_semantics_list"][:, :1],
                        generator, kp_detector, None, mapping)[0, 0].numpy().astype(np.float32)
    with torch.no_grad():
        kp = {}
        for tag, dd in (("batch1", d1), ("batch4", data_crop)):
            kc = kp_detector(dd["source_image"])
            kp[f"kp_source_{tag}"] = keypoint_transformation(kc, mapping(dd["source_semantics"]))["value"][:1].numpy()
            kp[f"kp_driving_{tag}"] = keypoint_transformation(
                kc, mapping(dd["target_semantics_list"][:, 0]))["value"][:1].numpy()
    meta1 = {"official": f"OpenTalker/SadTalker@{COMMIT}: get_facerender_data(batch_size=1) + make_animation "
                         "on its first step (frame 0); keypoints by the official keypoint_transformation on "
                         "the MappingNet output of frame 0's window run alone (batch1) and in the official "
                         "batch of 4 (frames 0, 16, 32, 48; batch4)",
             "versions": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1}}
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "sadtalker_e2e_batch1.npz", meta=json.dumps(meta1), prediction_frame0=p1,
                        source_image=data_crop["source_image"][:1].numpy(), **kp)
    if args.batch1_only:
        return

    pred = make_animation(data_crop["source_image"], data_crop["source_semantics"],
                          data_crop["target_semantics_list"], generator, kp_detector, None, mapping)
    # [BATCH, steps, 3, 256, 256] -> frames in order (animate.py reshapes the same way)
    frames = pred.reshape((-1,) + tuple(pred.shape[2:]))[:FRAMES].numpy().astype(np.float32)
    import cv2
    small = np.stack([cv2.resize(f.transpose(1, 2, 0), (32, 32), interpolation=cv2.INTER_AREA) for f in frames])

    meta = {
        "official": f"OpenTalker/SadTalker@{COMMIT}: src.generate_facerender_batch.get_facerender_data "
                    f"+ src.facerender.modules.make_animation.make_animation",
        "weights": "shared/reference/synth_ckpt.py rule (SadTalker_V0.0.2_256.safetensors, "
                   "mapping_00229-model.pth.tar)",
        "inputs": "source picture = astronaut()[0:240,105:345] PIL-bicubic to 256 (source_picture); "
                  "first_coeff = reference audio2exp.npz first_coeff [1,73]; coeffs = reference "
                  f"audio2coeff.npz coeff_3dmm[:{FRAMES}] [T,70]",
        "settings": {k: {"preprocess": v[0], "expression_scale": v[1], "still": v[2]} for k, v in SETTINGS.items()},
        "batch_size": BATCH, "frames": FRAMES, "kept_frames": list(KEPT),
        "prediction": "RGB in [0,1], [3,256,256] per frame, before resize/paste-back",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "threads": 1},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "sadtalker_e2e_windows.npz", meta=json.dumps(meta),
                        source_picture=picture, first_coeff=first, coeffs=coeffs, **windows)
    for part, kept in (("a", KEPT[:2]), ("b", KEPT[2:])):
        np.savez_compressed(args.out / f"sadtalker_e2e_frames_{part}.npz", meta=json.dumps(meta),
                            frame_indices=np.array(kept), prediction=frames[list(kept)])
    np.savez_compressed(args.out / "sadtalker_e2e_stats.npz", meta=json.dumps(meta),
                        mean=frames.mean(axis=(1, 2, 3)), std=frames.std(axis=(1, 2, 3)), small32=small)
    for p in sorted(args.out.glob("sadtalker_e2e_*.npz")):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    main()
