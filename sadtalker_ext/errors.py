"""Typed errors of sd-talking-head.

Every error the user can cause or fix derives from :class:`TalkingHeadError`. ``str(error)`` is a
single line that says what went wrong and what to do about it; the CLI prints exactly that line
(no traceback unless ``--debug``), the WebUI tab shows it, and the HTTP API returns it with a 4xx
status (``http_status``).
"""
from __future__ import annotations


class TalkingHeadError(Exception):
    """Base class. ``message`` is one line telling the user what to do."""

    http_status = 500

    def __init__(self, message: str):
        message = " ".join(str(message).split())  # keep it on one line
        super().__init__(message)
        self.message = message


class InputError(TalkingHeadError):
    """The user's input (image, audio, video, text, option) cannot be used."""

    http_status = 422


class ImageError(InputError):
    """The image cannot be read or has no usable pixels."""


class AudioError(InputError):
    """The audio cannot be read, is empty, or has no samples."""


class VideoError(InputError):
    """An input video cannot be read or has no frames."""


class NoFaceError(InputError):
    """No face was found where one is needed."""


class OptionError(InputError):
    """An option has an invalid value (out of range, wrong type, unknown choice)."""

    http_status = 400


class CheckpointError(TalkingHeadError):
    """A model file is missing, truncated, of the wrong model or not a state dict."""

    http_status = 503


class DownloadError(TalkingHeadError):
    """A model download failed (offline, server error, size or hash mismatch)."""

    http_status = 503


class DependencyError(TalkingHeadError):
    """An optional package (e.g. torch for the neural engines) is not installed."""

    http_status = 503


class GenerationInterrupted(TalkingHeadError):
    """The user (or the host) interrupted the run; no output was written."""

    http_status = 499


class OutputError(TalkingHeadError):
    """The output could not be written (disk full, permission denied)."""

    http_status = 507


class OutOfMemory(TalkingHeadError):
    """The GPU (or RAM) ran out of memory; the run was stopped and its memory given back."""

    http_status = 503


class AuthenticationError(TalkingHeadError):
    """An HTTP API request without the user name / password the server was started with."""

    http_status = 401


class CrossOriginRefused(TalkingHeadError):
    """An HTTP API request sent by a page of another site (its ``Origin`` is neither the server's own nor
    one the server's owner allowed)."""

    http_status = 403
