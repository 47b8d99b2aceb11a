"""Transactions whose items have names, so a cancelled one says which condition failed.

DynamoDB answers a cancelled TransactWriteItems with one reason per item, in the order of the
request; pynamodb builds that request as condition checks, then deletes, puts and updates
(``Connection.transact_write_items``), whatever order the code added them in. ``Transaction``
keeps the same four lists of names beside pynamodb's own, so ``failed(exc)`` maps the reasons
back to the names given, and no code depends on an item's position.
"""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

CONDITION_FAILED = "ConditionalCheckFailed"


class Transaction(TransactWrite):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._names: dict[str, list[str | None]] = {"check": [], "delete": [], "put": [], "update": []}

    def condition_check(self, *args: Any, name: str | None = None, **kwargs: Any) -> None:  # type: ignore[override]
        super().condition_check(*args, **kwargs)
        self._names["check"].append(name)

    def delete(self, *args: Any, name: str | None = None, **kwargs: Any) -> None:  # type: ignore[override]
        super().delete(*args, **kwargs)
        self._names["delete"].append(name)

    def save(self, *args: Any, name: str | None = None, **kwargs: Any) -> None:  # type: ignore[override]
        super().save(*args, **kwargs)
        self._names["put"].append(name)

    def update(self, *args: Any, name: str | None = None, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(*args, **kwargs)
        self._names["update"].append(name)

    def failed(self, exc: TransactWriteError) -> set[str]:
        """The names of the items whose condition cancelled the transaction."""
        order = [*self._names["check"], *self._names["delete"], *self._names["put"], *self._names["update"]]
        reasons = exc.cancellation_reasons or []
        return {
            name for name, reason in zip(order, reasons, strict=False)
            if name is not None and reason is not None and reason.code == CONDITION_FAILED
        }
