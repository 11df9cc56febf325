"""Pydantic models of the API (documentation and response validation).

Written for pydantic 1 (AUTOMATIC1111, FastAPI 0.94) and pydantic 2 (Forge) alike: plain fields
with ``Field(default, description=...)`` only, no v2-only configuration or validators.
"""
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field


class GenerateRequest(BaseModel):
    """JSON body of ``POST /talking-head/v1/generate`` (multipart uses the same field names)."""

    image: str = Field(..., description="the portrait file (PNG/JPEG/WebP/GIF/BMP/TIFF, <= 20 MB, "
                                        "<= 8192x8192), base64; a data: URL is fine")
    audio: str = Field(..., description="the speech file (wav/mp3/flac/ogg/m4a, <= 50 MB), base64")
    options: Dict[str, Any] = Field(default_factory=dict,
                                    description="generation options (engine, size, preprocess, still, "
                                                "pose_style, expression_scale, seed, ...); omitted "
                                                "ones take the WebUI settings, then the defaults")
    return_video: bool = Field(True, description="include the video as base64 in the response")


class GenerateResponse(BaseModel):
    video: Optional[str] = Field(None, description="the MP4 (H.264 + AAC), base64; null when "
                                                   "return_video is false")
    filename: str = Field(..., description="name of the saved video in the output folder")
    sidecar: str = Field(..., description="name of its JSON sidecar (every parameter, for reproduction)")
    engine: str = Field(..., description="engine that made the video (lite, sadtalker)")
    frames: int = Field(..., description="number of frames (25 fps)")
    duration_s: float = Field(..., description="duration in seconds")
    seconds: float = Field(..., description="time the generation took, in seconds")
    width: int = Field(..., description="video width in pixels")
    height: int = Field(..., description="video height in pixels")
    seed: int = Field(..., description="seed of the run")
    options: Dict[str, Any] = Field(default_factory=dict, description="the options used, defaults filled in")


class ErrorResponse(BaseModel):
    detail: str = Field(..., description="one line: what went wrong and what to do")
    error: str = Field("", description="error type (OptionError, ImageError, QueueFull, ...)")


class ModelFile(BaseModel):
    name: str
    engine: str
    state: str = Field(..., description="ok, size-mismatch, hash-mismatch, partial or missing")
    present: bool
    size: Optional[int] = Field(None, description="bytes on disk")
    expected_size: Optional[int] = Field(None, description="bytes of the official file, when known")
    path: Optional[str] = Field(None, description="where it was found")


class ModelsResponse(BaseModel):
    files: List[ModelFile]
    available_engines: List[str] = Field(..., description="engines that can run now ('lite' always)")
    torch: bool = Field(..., description="whether PyTorch is installed (needed by the neural engines)")
    search_dirs: List[str] = Field(..., description="folders searched for model files, in order (empty "
                                                    "unless the API has auth: server paths are not shown)")
    download_dir: Optional[str] = Field(None, description="where downloaded / hand-copied files should go "
                                                          "(with auth only)")
    queue: Dict[str, Any] = Field(default_factory=dict, description="running / waiting API jobs")


def json_schema(model) -> dict:
    """The model's JSON schema under pydantic 1 or 2."""
    builder = getattr(model, "model_json_schema", None)
    return builder() if builder is not None else model.schema()
