"""Command receipts: that a command (by customer and `message_id`) was handled, and
what it answered, in a table of their own, written in the command's transaction.

A receipt is what makes a redelivered or re-sent command a no-op that answers
its first reply again. Receipts live apart from the resources: no id a client
chooses for an outdial or a target can reach one (once they were aggregates
whose ids were derived from the customer and the message_id, so a client could
take such an id first and make another customer's command fail).

The key is a digest of the customer and the message_id, so any message_id AMQP
carries (up to 255 bytes, NULs included) is a key; `command` is a digest of the
command's body, so the same message_id on another command is told apart
(`idempotency_key_reused`) instead of answered the first command's reply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson

from services.store import Dialect

RECEIPTS = "outdial_receipts"


def create_table(cursor: Any, dialect: Dialect) -> None:
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {dialect.table(RECEIPTS)} ("
        "key TEXT PRIMARY KEY, command TEXT, status_code INTEGER NOT NULL, "
        "position BIGINT, body TEXT, created_ids TEXT)"
    )


def receipt_key(customer_id: UUID | str, message_id: str) -> str:
    """Scoped to the customer: another customer's equal message_id is another command."""
    return hashlib.sha256(f"{customer_id}\0{message_id}".encode()).hexdigest()


def command_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class Receipt:
    key: str
    command: str | None  # digest of the command's body; None for receipts of old stores
    status_code: int
    position: int | None  # the command's last event's, for a reply that stored events
    body: str | None  # the reply's data (status 200) or error, as JSON
    created_ids: list[str] | None = None  # instead of `body`: the targets an AddTargets made

    def reply_part(self) -> Any:
        return None if self.body is None else orjson.loads(self.body)


def find(cursor: Any, dialect: Dialect, keys: Sequence[str]) -> dict[str, Receipt]:
    """The receipts of these keys that exist, in one query."""
    if not keys:
        return {}
    marks = ", ".join("?" * len(keys))
    cursor.execute(
        dialect.sql(
            "SELECT key, command, status_code, position, body, created_ids "
            f"FROM {dialect.table(RECEIPTS)} WHERE key IN ({marks})"
        ),
        list(keys),
    )
    return {
        row[0]: Receipt(
            row[0],
            row[1],
            int(row[2]),
            None if row[3] is None else int(row[3]),
            row[4],
            None if row[5] is None else orjson.loads(row[5]),
        )
        for row in cursor.fetchall()
    }


def insert(cursor: Any, dialect: Dialect, receipts: Iterable[Receipt], *, replace: bool) -> None:
    """Insert receipts; a key already there is an IntegrityError (the same command
    handled elsewhere meanwhile), unless `replace` (migrating an old store's)."""
    rows = [
        (
            r.key,
            r.command,
            r.status_code,
            r.position,
            r.body,
            None if r.created_ids is None else orjson.dumps(r.created_ids).decode(),
        )
        for r in receipts
    ]
    if not rows:
        return
    conflict = " ON CONFLICT (key) DO NOTHING" if replace else ""
    cursor.executemany(
        dialect.sql(
            f"INSERT INTO {dialect.table(RECEIPTS)} "
            "(key, command, status_code, position, body, created_ids) "
            f"VALUES (?, ?, ?, ?, ?, ?){conflict}"
        ),
        rows,
    )
