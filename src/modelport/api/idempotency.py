"""``Idempotency-Key`` on creating requests: a client that retries (a timeout, a lost answer)
gets the first answer again instead of a second deployment.

Powertools' idempotency utility does the work, with its records in the single table
(``PK = IDEMPOTENCY#``, ``SK`` = the hash of owner, operation and key; expiring through the table's
TTL attribute). The same key with a different body is refused (422 ``idempotency_key_reused``);
a retry while the first request still runs gets 409 ``idempotency_in_progress``. A request that
failed leaves nothing behind, so it can be retried with the same key.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from modelport.domain.errors import Conflict, Invalid
from modelport.settings import Settings
from modelport.store import schema

HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
EXPIRES_AFTER_SECONDS = 24 * 3600

Work = Callable[[], dict[str, Any]]
M = TypeVar("M", bound=BaseModel)


class Idempotency:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._runner: Callable[..., dict[str, Any]] | None = None

    def _build(self) -> Callable[..., dict[str, Any]]:
        # imported on first use: most requests carry no key, and Lambda bills imports as init
        import boto3
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )

        client = boto3.client(
            "dynamodb", region_name=self.settings.aws_region, endpoint_url=self.settings.dynamodb_endpoint
        )
        layer = DynamoDBPersistenceLayer(
            table_name=self.settings.table_name, key_attr=schema.PK, sort_key_attr=schema.SK,
            static_pk_value="IDEMPOTENCY#", expiry_attr=schema.TTL_ATTRIBUTE,
            in_progress_expiry_attr="in_progress_ttl", status_attr="idempotency_status", data_attr="response",
            validation_key_attr="request_hash", boto3_client=client,
        )
        config = IdempotencyConfig(
            event_key_jmespath="[owner, operation, key]", payload_validation_jmespath="payload",
            expires_after_seconds=EXPIRES_AFTER_SECONDS, raise_on_no_idempotency_key=True,
            use_local_cache=False,
        )

        @idempotent_function(data_keyword_argument="request", persistence_store=layer, config=config)
        def run(request: dict[str, Any], work: Work) -> dict[str, Any]:
            return work()

        return run

    def run(self, owner: str, operation: str, key: str | None, payload: dict[str, Any], work: Work) -> dict[str, Any]:
        """``work()`` once per (owner, operation, key); without a key, every time."""
        if key is None:
            return work()
        if not _KEY.match(key):
            raise Invalid(f"{HEADER} must be 1-255 printable ASCII characters", code="bad_idempotency_key")
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyValidationError,
        )

        with self._lock:
            if self._runner is None:
                self._runner = self._build()
        request = {"owner": owner, "operation": operation, "key": key, "payload": payload}
        try:
            return self._runner(request=request, work=work)
        except IdempotencyValidationError as exc:
            raise Invalid(
                f"{HEADER} {key!r} was used before with a different request; use a new key",
                code="idempotency_key_reused",
            ) from exc
        except IdempotencyAlreadyInProgressError as exc:
            raise Conflict(
                f"a request with {HEADER} {key!r} is still in progress; retry in a moment",
                code="idempotency_in_progress",
            ) from exc

    def create(
        self, owner: str, operation: str, key: str | None, payload: dict[str, Any], make: Callable[[], M],
        answer: type[M],
    ) -> M:
        """A creating request's answer: ``make()``'s, or with a repeated key the first one's again."""
        return answer.model_validate(self.run(owner, operation, key, payload, lambda: make().model_dump(mode="json")))
