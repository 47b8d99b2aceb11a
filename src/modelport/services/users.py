"""Users and their API keys. A key is minted here, shown once, and only its sha256 is stored."""

from __future__ import annotations

import hashlib
import re
import secrets

from modelport.domain.errors import Invalid
from modelport.store.repository import Store

KEY_PREFIX = "mp_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_user(store: Store, name: str) -> tuple[str, str]:
    """A user and its first API key (returned once). Conflict ``user_exists`` if the name is taken."""
    if not _NAME.match(name):
        raise Invalid("a user name is 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
                      code="bad_user_name")
    key = _new_key()
    store.create_user(name, hash_api_key(key))
    return name, key


def add_api_key(store: Store, owner: str) -> str:
    """Another API key for an existing user (returned once)."""
    key = _new_key()
    store.add_api_key(owner, hash_api_key(key))
    return key


def owner_of_key(store: Store, key: str) -> str | None:
    """Whose key this is; None for a key that is not one of ours."""
    return store.owner_for_key_hash(hash_api_key(key))
