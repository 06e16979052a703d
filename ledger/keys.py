"""API keys of the receiver: making a key, hashing it, checking a presented one.

A key reads ``rlk_<key id>_<secret>``: the key id (12 hex digits) names the key
in listings and logs, the secret is 32 random bytes in URL-safe base64. Only
``sha256:`` and the SHA-256 hex digest of the whole key are stored. A key has
256 bits of entropy, so a fast hash is enough: nobody can guess a key from its
digest, and a slow password hash would only cost every request time.

Keys live in the ledger's ``api_keys`` table (see `ledger.store`) or in a keys
file, a JSON object ``{"keys": [...]}`` that `serve --keys FILE` reads.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

KEY_PREFIX = "rlk"
_KEY_FORMAT = re.compile(r"^rlk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_KEY_ID_FORMAT = re.compile(r"^[0-9a-f]{12}$")
_SCHEMES = ("apikey", "bearer")
# Compared against when a presented key id is unknown, so an unknown id costs the
# same work as a known one with a wrong secret.
_UNKNOWN_KEY_DIGEST = "sha256:" + "0" * 64


class KeyFileError(Exception):
    """A keys file could not be read or written, or its content is invalid."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key: its id, the deployment it posts as, its digest and its lifetime."""

    key_id: str
    deployment: str
    key_hash: str
    label: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def new_key() -> tuple[str, str]:
    """Return (key id, whole key) for a new random key."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_key_id(text: str) -> bool:
    return bool(_KEY_ID_FORMAT.match(text))


def key_from_header(authorization: str | None) -> str | None:
    """Return the key of an ``ApiKey <key>`` or ``Bearer <key>`` header, or None."""
    if not authorization:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() not in _SCHEMES or not credential or " " in credential:
        return None
    return credential


class KeyRing:
    """The keys a receiver accepts, indexed by key id; replaced whole on reload."""

    def __init__(self, keys: list[ApiKey]):
        self._by_id = {key.key_id: key for key in keys}

    def __len__(self) -> int:
        return sum(1 for key in self._by_id.values() if key.active)

    def knows(self, presented: str) -> bool:
        """Return whether the presented key's id is in the ring (active or not)."""
        match = _KEY_FORMAT.match(presented)
        return bool(match) and match.group(1) in self._by_id

    def authenticate(self, presented: str) -> ApiKey | None:
        """Return the active key matching `presented`, comparing digests in constant time."""
        match = _KEY_FORMAT.match(presented)
        stored = self._by_id.get(match.group(1)) if match else None
        expected = stored.key_hash if stored is not None else _UNKNOWN_KEY_DIGEST
        matches = hmac.compare_digest(hash_key(presented), expected)
        if not matches or stored is None or not stored.active:
            return None
        return stored


# ---------------------------------------------------------------------------
# Keys file


def read_keys_file(path: Path) -> list[ApiKey]:
    """Read a keys file; a missing file holds no keys. Raises KeyFileError on bad content."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except OSError as error:
        raise KeyFileError(f"{path}: cannot be read: {error.strerror}") from None
    except orjson.JSONDecodeError as error:
        raise KeyFileError(f"{path}: invalid JSON ({error}); restore it or write a new one with `keys add`") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeyFileError(f'{path}: expected a JSON object {{"keys": [...]}}')
    keys = []
    for number, item in enumerate(data["keys"]):
        try:
            keys.append(ApiKey(
                key_id=item["key_id"],
                deployment=item["deployment"],
                key_hash=item["key_hash"],
                label=item.get("label") or "",
                created_at=datetime.fromisoformat(item["created_at"]),
                revoked_at=datetime.fromisoformat(item["revoked_at"]) if item.get("revoked_at") else None,
            ))
        except (KeyError, TypeError, ValueError) as error:
            raise KeyFileError(f"{path}: key #{number} is invalid ({error!r}); fix or remove it") from None
    return keys


def write_keys_file(path: Path, keys: list[ApiKey]) -> None:
    """Replace a keys file atomically, readable by its owner only."""
    records = []
    for key in keys:
        record = asdict(key)
        record["created_at"] = key.created_at.isoformat()
        record["revoked_at"] = key.revoked_at.isoformat() if key.revoked_at else None
        records.append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as target:
            target.write(orjson.dumps({"keys": records}, option=orjson.OPT_INDENT_2))
            target.flush()
            os.fsync(target.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def add_to_file(path: Path, deployment: str, label: str = "") -> tuple[ApiKey, str]:
    """Add a new key to a keys file; return (stored key, whole key to show once)."""
    keys = read_keys_file(path)
    taken = {key.key_id for key in keys}
    key_id, whole = new_key()
    while key_id in taken:
        key_id, whole = new_key()
    stored = ApiKey(key_id, deployment, hash_key(whole), label, datetime.now(timezone.utc))
    write_keys_file(path, [*keys, stored])
    return stored, whole


def revoke_in_file(path: Path, key_id: str) -> bool:
    """Mark a key of a keys file revoked; return False when no active key has that id."""
    keys = read_keys_file(path)
    now = datetime.now(timezone.utc)
    found = False
    updated = []
    for key in keys:
        if key.key_id == key_id and key.active:
            key = ApiKey(key.key_id, key.deployment, key.key_hash, key.label, key.created_at, now)
            found = True
        updated.append(key)
    if found:
        write_keys_file(path, updated)
    return found
