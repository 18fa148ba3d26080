"""The internal token: what Home Assistant's Thermo Bridge integration reads the server's status with.

Not an Auth0 token and not for users: a random secret the server creates on its first start
and keeps in a file of its own (mode 0600) next to its data. Under the Supervisor the server
hands it to Home Assistant with its discovery; without the Supervisor the user copies it from
that file into the integration. It is never logged; only the file's path is, once, when the
token is created.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import stat
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

TOKEN_BYTES = 32
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32,256}")


class InternalTokenError(Exception):
    """The token file cannot be used (unreadable, or holds no token)."""


def load_or_create_internal_token(path: str | os.PathLike[str]) -> tuple[str, bool]:
    """The token in ``path``, creating the file (mode 0600) on first use; (token, created)."""
    token_path = Path(path)
    try:
        token = token_path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        try:
            return _create(token_path), True
        except OSError as err:
            raise InternalTokenError(f"cannot create the internal token file {token_path}: {err.strerror}") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not text"
        raise InternalTokenError(f"cannot read the internal token file {token_path}: {reason}") from None
    if not TOKEN_RE.fullmatch(token):
        raise InternalTokenError(f"{token_path} holds no internal token; delete it and the server creates a new one")
    mode = stat.S_IMODE(token_path.stat().st_mode)
    if mode & 0o077:
        _LOGGER.warning("Internal token file %s was readable by others (mode %o); setting 0600", token_path, mode)
        token_path.chmod(0o600)
    return token, False


def _create(token_path: Path) -> str:
    token_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    # A private temp file hard-linked into place: never half-written, never with a looser mode,
    # and when two processes create it at once both end up with the one that won.
    tmp = token_path.with_name(f".{token_path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, token_path)
        except FileExistsError:
            return token_path.read_text(encoding="ascii").strip()
    finally:
        tmp.unlink(missing_ok=True)
    return token


def token_matches(expected: str, token: str | None) -> bool:
    """Whether a bearer ``token`` (``bearer.bearer_token``'s) is ``expected``, compared in constant time."""
    return token is not None and hmac.compare_digest(token.encode(), expected.encode())
