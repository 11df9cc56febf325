"""Content digests of input files (sidecars and the batch runner's job keys)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB blocks (flat memory for any size).

    Raises ``OSError`` when the file cannot be read. (``hashlib.file_digest`` is Python 3.11+ only.)
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
