"""Registry of the official model files: where they come from, how big they are, who needs them.

Every neural engine or stage of sd-talking-head reads one or more released checkpoint files. This
module lists each of them once, as a :class:`ModelFile` (name, download URLs, exact size, sha256,
engine, licence, description), and groups them into :class:`EngineSpec` requirements so that
:mod:`sadtalker_ext.models.locate` can tell which engines are usable and
:mod:`sadtalker_ext.models.download` can fetch and verify what is missing. No network access
happens here: this is data only.

Engines (``ModelFile.engine``):

* ``"sadtalker"``: SadTalker v0.0.2-rc (Apache-2.0). ``SadTalker_V0.0.2_256.safetensors`` holds the
  audio-to-expression net (ExpNet), the pose CVAE, the 3DMM regressor, the keypoint detector and the
  face renderer; the 512 file is the same layout trained for 512x512 output. ``mapping_00229`` /
  ``mapping_00109`` map 3DMM coefficients (70 for crop/resize, 73 for full-image preprocessing) to
  keypoint motion. Source: ``scripts/download_models.sh`` of OpenTalker/SadTalker (GitHub release
  ``v0.0.2-rc``) and the authors' Hugging Face repo ``vinthony/SadTalker-V002rc``.
* ``"wav2lip"``: the Wav2Lip lip-sync generator (Rudrabha/Wav2Lip; personal / research /
  non-commercial use only, trained on LRS2). Either ``wav2lip_gan.pth`` or ``wav2lip.pth`` is
  enough. The official links are SharePoint pages that need a browser
  (https://github.com/Rudrabha/Wav2Lip#getting-the-weights); the direct URLs are the Hugging Face
  repo of the sd-wav2lip-uhq / Wav2Lip Studio author (``numz/wav2lip_studio``) and, for
  ``wav2lip.pth``, the SadTalker v0.0.2 release.
* ``"restoration"``: optional face restoration (GFPGAN v1.4, Apache-2.0; CodeFormer, S-Lab
  License 1.0, non-commercial). Either file is enough.

Sizes and checksums: ``size`` (bytes) and ``sha256`` are checked after every download when they are
not ``None``; ``None`` means unknown and is then not checked. Where each value comes from is in
``ModelFile.checksum_source``:

* SadTalker: the Git LFS pointers of the authors' upload to ``vinthony/SadTalker-V002rc`` (commit
  ``a4827306558d062e5884afff655fdfeb75d9c8ab``, "Upload 5 files"). The safetensors size 725,066,984
  equals the size of a file written from the layout in ``shared/reference`` (no metadata).
* Wav2Lip, GFPGAN, CodeFormer: no official checksum is published. The values are the Git LFS
  pointers of ``numz/wav2lip_studio`` (same author as sd-wav2lip-uhq); the same size and sha256
  are found in several independent Hugging Face mirrors, including one that cites the official
  Wav2Lip link. A mirror serving different bytes is rejected and the next URL is tried.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import OptionError

SADTALKER_RELEASE = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc"
SADTALKER_HF = "https://huggingface.co/vinthony/SadTalker-V002rc/resolve/main"
SADTALKER_LEGACY_RELEASE = "https://github.com/Winfredy/SadTalker/releases/download/v0.0.2"
WAV2LIP_STUDIO_HF = "https://huggingface.co/numz/wav2lip_studio/resolve/main"
WAV2LIP_STUDIO_02_HF = "https://huggingface.co/numz/wav2lip_studio-0.2/resolve/main"
WAV2LIP_PAGE = "https://github.com/Rudrabha/Wav2Lip#getting-the-weights"
SADTALKER_PAGE = "https://github.com/OpenTalker/SadTalker/releases/tag/v0.0.2-rc"

_SADTALKER_SUMS = ("Git LFS pointer of the SadTalker authors' upload, huggingface.co/vinthony/"
                   "SadTalker-V002rc commit a4827306558d062e5884afff655fdfeb75d9c8ab")
_MIRROR_SUMS = ("Git LFS pointer of huggingface.co/{repo}; no official checksum is published, "
                "independent mirrors report the same size and sha256")


@dataclass(frozen=True)
class ModelFile:
    """One released checkpoint file.

    Attributes:
        name: file name on disk, exactly as the official code expects it.
        urls: direct download URLs, tried in order (mirrors). May be empty (manual download only).
        size: exact size in bytes, or ``None`` when not known exactly (then not verified).
        sha256: lower-case hex digest, or ``None`` when not known (then not verified).
        engine: the engine or stage that reads it: ``"sadtalker"``, ``"wav2lip"`` or
            ``"restoration"``.
        stage: which part of that engine uses it (free text, for display).
        licence: licence of the weights (short form).
        description: one line, for ``models status``.
        required: ``False`` for files that only some settings need (the 512 renderer, the plain
            Wav2Lip alternative, face restoration); shown as optional by ``models status``.
        approx_size: size for display when ``size`` is unknown (bytes, approximate).
        page: a web page where a person can download the file by hand.
        checksum_source: where ``size`` / ``sha256`` come from.
        aliases: other names under which a host keeps the same file (e.g. the WebUI's
            ``codeformer-v0.1.0.pth``); looked up after ``name``.
    """

    name: str
    urls: Tuple[str, ...]
    size: Optional[int]
    sha256: Optional[str]
    engine: str
    stage: str
    licence: str
    description: str
    required: bool = True
    approx_size: Optional[int] = None
    page: Optional[str] = None
    checksum_source: str = ""
    aliases: Tuple[str, ...] = ()

    @property
    def display_size(self) -> Optional[int]:
        """Exact size if known, else the approximate one (bytes), else ``None``."""
        return self.size if self.size is not None else self.approx_size

    @property
    def all_names(self) -> Tuple[str, ...]:
        return (self.name,) + tuple(self.aliases)


@dataclass(frozen=True)
class EngineSpec:
    """What an engine needs: every entry of ``requirements`` is a tuple of alternative file names,
    and at least one file of each tuple must be present (e.g. ``("wav2lip_gan.pth", "wav2lip.pth")``).
    The first name of each tuple is the one ``models download`` fetches by default."""

    name: str
    description: str
    requirements: Tuple[Tuple[str, ...], ...]
    optional: bool = False


FILES: Tuple[ModelFile, ...] = (
    ModelFile(
        name="SadTalker_V0.0.2_256.safetensors",
        urls=(f"{SADTALKER_RELEASE}/SadTalker_V0.0.2_256.safetensors",
              f"{SADTALKER_HF}/SadTalker_V0.0.2_256.safetensors"),
        size=725_066_984,
        sha256="c211f5d6de003516bf1bbda9f47049a4c9c99133b1ab565c6961e5af16477bff",
        engine="sadtalker", stage="audio2coeff + 3DMM + face renderer (256 px)",
        licence="Apache-2.0",
        description="ExpNet, PoseVAE, 3DMM regressor, keypoint detector and renderer, 256x256",
        page=SADTALKER_PAGE, checksum_source=_SADTALKER_SUMS,
    ),
    ModelFile(
        name="SadTalker_V0.0.2_512.safetensors",
        urls=(f"{SADTALKER_RELEASE}/SadTalker_V0.0.2_512.safetensors",
              f"{SADTALKER_HF}/SadTalker_V0.0.2_512.safetensors"),
        size=725_066_984,
        sha256="0e063f7ff5258240bdb0f7690783a7b1374e6a4a81ce8fa33456f4cd49694340",
        engine="sadtalker", stage="audio2coeff + 3DMM + face renderer (512 px)",
        licence="Apache-2.0",
        description="same networks as the 256 file, renderer trained for 512x512 (size 512 only)",
        required=False, page=SADTALKER_PAGE, checksum_source=_SADTALKER_SUMS,
    ),
    ModelFile(
        name="mapping_00229-model.pth.tar",
        urls=(f"{SADTALKER_RELEASE}/mapping_00229-model.pth.tar",
              f"{SADTALKER_HF}/mapping_00229-model.pth.tar"),
        size=155_521_183,
        sha256="62a1e06006cc963220f6477438518ed86e9788226c62ae382ddc42fbcefb83f1",
        engine="sadtalker", stage="mapping net (crop / resize preprocessing)",
        licence="Apache-2.0",
        description="MappingNet, 70 coefficients -> keypoint motion (crop, resize, extcrop)",
        page=SADTALKER_PAGE, checksum_source=_SADTALKER_SUMS,
    ),
    ModelFile(
        name="mapping_00109-model.pth.tar",
        urls=(f"{SADTALKER_RELEASE}/mapping_00109-model.pth.tar",
              f"{SADTALKER_HF}/mapping_00109-model.pth.tar"),
        size=155_779_231,
        sha256="84a8642468a3fcfdd9ab6be955267043116c2bec2284686a5262f1eaf017f64c",
        engine="sadtalker", stage="mapping net (full-image preprocessing)",
        licence="Apache-2.0",
        description="MappingNet, 73 coefficients -> keypoint motion (full, extfull)",
        page=SADTALKER_PAGE, checksum_source=_SADTALKER_SUMS,
    ),
    ModelFile(
        name="wav2lip_gan.pth",
        urls=(f"{WAV2LIP_STUDIO_HF}/Wav2lip/wav2lip_gan.pth",
              f"{WAV2LIP_STUDIO_02_HF}/Wav2lip/wav2lip_gan.pth"),
        size=435_801_865,
        sha256="ca9ab7b7b812c0e80a6e70a5977c545a1e8a365a6c49d5e533023c034d7ac3d8",
        engine="wav2lip", stage="lip-sync generator (GAN-trained)",
        licence="Wav2Lip: personal / research / non-commercial use only",
        description="Wav2Lip + GAN: slightly weaker sync, better visual quality",
        page=WAV2LIP_PAGE,
        checksum_source=_MIRROR_SUMS.format(repo="numz/wav2lip_studio-0.2"),
    ),
    ModelFile(
        name="wav2lip.pth",
        urls=(f"{WAV2LIP_STUDIO_HF}/Wav2lip/wav2lip.pth",
              f"{SADTALKER_LEGACY_RELEASE}/wav2lip.pth"),
        size=435_807_851,
        sha256="b78b681b68ad9fe6c6fb1debc6ff43ad05834a8af8a62ffc4167b7b34ef63c37",
        engine="wav2lip", stage="lip-sync generator",
        licence="Wav2Lip: personal / research / non-commercial use only",
        description="Wav2Lip: most accurate lip sync (alternative to wav2lip_gan.pth)",
        required=False, page=WAV2LIP_PAGE,
        checksum_source=_MIRROR_SUMS.format(repo="numz/wav2lip_studio"),
    ),
    ModelFile(
        name="GFPGANv1.4.pth",
        urls=("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
              "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",
              f"{WAV2LIP_STUDIO_HF}/GFPGAN/GFPGANv1.4.pth"),
        size=348_632_874,
        sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        engine="restoration", stage="face restoration (optional)",
        licence="Apache-2.0 (GFPGAN; see its LICENSE for third-party parts)",
        description="GFPGAN v1.4 face restoration",
        required=False, page="https://github.com/TencentARC/GFPGAN#european_castle-model-zoo",
        checksum_source=_MIRROR_SUMS.format(repo="numz/wav2lip_studio"),
    ),
    ModelFile(
        name="codeformer.pth",
        urls=("https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
              f"{WAV2LIP_STUDIO_02_HF}/Codeformer/codeformer-v0.1.0.pth"),
        size=376_637_898,
        sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        engine="restoration", stage="face restoration (optional)",
        licence="S-Lab License 1.0 (non-commercial)",
        description="CodeFormer v0.1.0 face restoration",
        required=False, page="https://github.com/sczhou/CodeFormer/releases/tag/v0.1.0",
        checksum_source=_MIRROR_SUMS.format(repo="numz/wav2lip_studio-0.2"),
        aliases=("codeformer-v0.1.0.pth",),
    ),
)

ENGINES: Dict[str, EngineSpec] = {
    "sadtalker": EngineSpec(
        name="sadtalker",
        description="SadTalker motion + face renderer (256 or 512 px)",
        requirements=(("SadTalker_V0.0.2_256.safetensors", "SadTalker_V0.0.2_512.safetensors"),
                      ("mapping_00229-model.pth.tar",),
                      ("mapping_00109-model.pth.tar",)),
    ),
    "wav2lip": EngineSpec(
        name="wav2lip",
        description="Wav2Lip lip-sync refinement",
        requirements=(("wav2lip_gan.pth", "wav2lip.pth"),),
    ),
    "restoration": EngineSpec(
        name="restoration",
        description="GFPGAN / CodeFormer face restoration",
        requirements=(("GFPGANv1.4.pth", "codeformer.pth"),),
        optional=True,
    ),
}

_BY_NAME: Dict[str, ModelFile] = {f.name: f for f in FILES}


def format_size(n: Optional[int]) -> str:
    """Bytes as a short human string (decimal kB / MB / GB, as the release pages show them); "?" for None."""
    if n is None:
        return "?"
    if n >= 1_000_000_000:
        return f"{n / 1e9:.2f} GB"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} MB"
    if n >= 1_000:
        return f"{n / 1e3:.1f} kB"
    return f"{n} B"


def get_file(name: str) -> ModelFile:
    """The :class:`ModelFile` called ``name`` (an alias also matches).

    Raises:
        OptionError: no official file has that name.
    """
    if name in _BY_NAME:
        return _BY_NAME[name]
    for spec in FILES:
        if name in spec.aliases:
            return spec
    raise OptionError(f"Unknown model file '{name}'; choose one of: {', '.join(_BY_NAME)}.")


def engine_names() -> List[str]:
    """Names of the engines / stages that need model files, in display order."""
    return list(ENGINES)


def get_engine(name: str) -> EngineSpec:
    """The :class:`EngineSpec` called ``name``.

    Raises:
        OptionError: unknown engine.
    """
    try:
        return ENGINES[name]
    except KeyError:
        raise OptionError(f"Unknown engine '{name}'; choose one of: {', '.join(ENGINES)}.") from None


def files_for(engine: Optional[str] = None,
              files: Optional[Sequence[ModelFile]] = None) -> List[ModelFile]:
    """Every registered file of ``engine`` (all files when ``None``), in registry order.

    Raises:
        OptionError: unknown engine (only checked against :data:`ENGINES` when ``files`` is the
        default registry).
    """
    pool = FILES if files is None else tuple(files)
    if engine is None:
        return list(pool)
    if files is None:
        get_engine(engine)
    return [f for f in pool if f.engine == engine]


def default_downloads(engine: str) -> List[ModelFile]:
    """The files ``models download --engine ENGINE`` fetches: the first alternative of every
    requirement of that engine (e.g. the 256 safetensors, both mapping files; ``wav2lip_gan.pth``)."""
    spec = get_engine(engine)
    return [get_file(alternatives[0]) for alternatives in spec.requirements]
