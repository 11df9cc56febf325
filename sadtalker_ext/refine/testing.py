"""A tiny, randomly initialised Stable Diffusion pipeline built from configs, fully offline.

Used by the tests and ``bench/refine.py`` to run the diffusers backend end to end without any
download: a byte-level-free CLIP BPE tokenizer written from a small vocabulary and merge list, a
2-layer CLIP text encoder (hidden size 32), a 2-level UNet (16/32 channels, cross-attention size
32) and a 2-level AutoencoderKL (16/32 channels, latent scale factor 2). Component layouts follow the diffusers /
transformers config classes (``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``); the
weights are random (``torch.manual_seed(seed)``), so the "refinement" is meaningless noise - only
shapes, call counts, masks and timings are meaningful.

Needs torch, diffusers and transformers (the TEST requirements).
"""
from __future__ import annotations

import json
import string
from pathlib import Path

__all__ = ["TINY_NATIVE_SIZE", "build_tiny_pipeline", "write_tiny_tokenizer"]

#: Native resolution of the tiny pipeline in pixels (UNet sample size 16 x VAE factor 2).
TINY_NATIVE_SIZE = 32


def write_tiny_tokenizer(folder: str | Path) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` of a small CLIP BPE tokenizer into ``folder``.

    Vocabulary: the special tokens, the 26 lowercase letters, digits and a few punctuation marks,
    each bare and with the end-of-word marker ``</w>``, plus a handful of merged tokens. Returns the
    folder. Tokens are ids in insertion order; ``<|endoftext|>`` doubles as the padding token.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(string.ascii_lowercase) + list(string.digits) + list(",.!-'")
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
    for s in symbols:
        vocab.setdefault(s + "</w>", len(vocab))
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "r"), ("e", "r</w>"),
              ("i", "n"), ("in", "g</w>"), ("f", "a"), ("fa", "c"), ("fac", "e</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab.setdefault("<|startoftext|>", len(vocab))
    vocab.setdefault("<|endoftext|>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    return folder


def build_tiny_pipeline(folder: str | Path | None = None, *, seed: int = 0, inpaint_unet: bool = False):
    """A tiny ``StableDiffusionImg2ImgPipeline`` (random weights, CPU, float32).

    folder: where the tokenizer files are written (a temporary folder when None).
    inpaint_unet: a 9-channel UNet (the layout of SD inpainting checkpoints) instead of 4.
    Returns the pipeline; ``save_pretrained(dir)`` gives a diffusers folder that
    :class:`~sadtalker_ext.refine.backends.DiffusersBackend` loads offline.
    """
    import tempfile

    import torch
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionImg2ImgPipeline, \
        UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = write_tiny_tokenizer(folder if folder is not None else tempfile.mkdtemp(prefix="tiny-sd-tok-"))
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(
        sample_size=TINY_NATIVE_SIZE // 2, in_channels=9 if inpaint_unet else 4, out_channels=4,
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, sample_size=TINY_NATIVE_SIZE)
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                                beta_schedule="scaled_linear", num_train_timesteps=1000,
                                                steps_offset=1)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
