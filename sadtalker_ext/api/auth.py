"""HTTP Basic credentials for the API routes (no FastAPI import here)."""
from __future__ import annotations

import hmac
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

from ..errors import OptionError

CredentialsArg = Union[None, str, Mapping[str, str], Iterable[Tuple[str, str]]]


def parse_credentials(spec: CredentialsArg) -> Optional[Dict[str, str]]:
    """``{user: password}`` from the WebUI's ``--api-auth`` format ``"user:pass,user2:pass2"``, a
    mapping, or (user, password) pairs. None (or an empty spec) means no authentication.

    A password may contain ':' (only the first ':' separates). Raises OptionError for an entry
    without ':' or with an empty user name.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        pairs = []
        for entry in spec.replace("\n", ",").split(","):
            entry = entry.strip()
            if not entry:
                continue
            if ":" not in entry:
                raise OptionError("API credentials must look like 'user:password,user2:password2'")
            pairs.append(tuple(entry.split(":", 1)))
    elif isinstance(spec, Mapping):
        pairs = list(spec.items())
    else:
        pairs = [tuple(p) for p in spec]
    creds = {str(u).strip(): str(p) for u, p in pairs}
    if any(not u for u in creds):
        raise OptionError("API credentials need a user name before ':'")
    return creds or None


def check_credentials(creds: Mapping[str, str], user: str, password: str) -> bool:
    """Constant-time check of one user/password against ``creds``."""
    expected = creds.get(user)
    if expected is None:
        hmac.compare_digest(password.encode(), password.encode())  # same work for unknown users
        return False
    return hmac.compare_digest(password.encode("utf8"), expected.encode("utf8"))
