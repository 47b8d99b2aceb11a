"""Users and their API keys (only a key's sha256 is stored)."""

from __future__ import annotations

from pynamodb.exceptions import DoesNotExist, TransactWriteError

from modelport.domain.entities import (
    utcnow,
)
from modelport.domain.errors import Conflict
from modelport.store import keys
from modelport.store.records import (
    ApiKeyRecord,
    UserRecord,
)
from modelport.store.table import (
    Table,
)


class UserRepository(Table):
    def create_user(self, name: str, key_sha256: str) -> None:
        """A user and its first API key (its sha256), or Conflict ``user_exists``."""
        now = utcnow()
        user = self.records.User(*keys.user(name), owner=name, name=name, created_at=now, type="USER")
        api_key = self.records.ApiKey(
            *keys.api_key(key_sha256), owner=name, created_at=now, type="APIKEY"
        )
        try:
            with self._transact() as tx:
                tx.save(user, condition=UserRecord.PK.does_not_exist())
                tx.save(api_key, condition=ApiKeyRecord.PK.does_not_exist())
        except TransactWriteError as exc:
            raise Conflict(f"user {name!r} already exists", code="user_exists") from exc

    def add_api_key(self, owner: str, key_sha256: str) -> None:
        self.records.ApiKey(
            *keys.api_key(key_sha256), owner=owner, created_at=utcnow(), type="APIKEY"
        ).save(condition=ApiKeyRecord.PK.does_not_exist())

    def user_exists(self, name: str) -> bool:
        try:
            self.records.User.get(*keys.user(name))
        except DoesNotExist:
            return False
        return True

    def owner_for_key_hash(self, key_sha256: str) -> str | None:
        try:
            return self.records.ApiKey.get(*keys.api_key(key_sha256)).owner
        except DoesNotExist:
            return None
