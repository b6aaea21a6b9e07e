"""`outdial import`: a campaign list from CSV into an outdial, as `AddTargets` of 1,000.

Columns: `name`, `detail`, `data`, and per destination `destination_N_type`,
`destination_N_target` (and optionally `destination_N_target_name`,
`destination_N_name`, `destination_N_detail`) for N in 0..4. A row is checked by
the same model the service parses (`TargetFields`); a row that fails is reported
with its line and reason and left out, the others are imported.

Resumable without adding a row twice: each batch is sent under a `message_id`
made from the outdial, the file's content and the batch's number, so a batch
sent again (after a crash, a timeout, a second run) takes effect once and gets
its first reply. A small state file beside the CSV remembers the batches done,
so a second run skips them without asking; losing it costs time, not duplicates.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson
from pydantic import ValidationError

from services.progress import progress
from shared import errors
from shared.client import OutdialClient
from shared.commands import MAX_COMMAND_BYTES, MAX_TARGETS_PER_COMMAND, TargetFields, plain
from shared.shapes import timestamp

ADDRESS_FIELDS = ("type", "target", "target_name", "name", "detail")
IMPORTS = uuid5(NAMESPACE_URL, "urn:outdial:import")


@dataclass
class Rejected:
    line: int
    reason: str


@dataclass
class Summary:
    rows: int = 0
    imported: int = 0
    skipped: int = 0  # imported by an earlier run
    rejected: list[Rejected] = field(default_factory=list)


def read_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | Rejected]]:
    """(line, target fields or why not) for every data row of the CSV."""
    reader = csv.DictReader(io.StringIO(text))
    missing = {"name"} - set(reader.fieldnames or [])
    if missing:
        raise ValueError(f"the CSV has no {', '.join(sorted(missing))} column")
    for row in reader:
        line = reader.line_num
        if None in row:
            yield line, Rejected(line, "more cells than columns")
            continue
        fields: dict[str, Any] = {k: row.get(k) or "" for k in ("name", "detail", "data")}
        for n in range(5):
            cells = {f: (row.get(f"destination_{n}_{f}") or "").strip() for f in ADDRESS_FIELDS}
            if cells["type"] or cells["target"]:
                fields[f"destination_{n}"] = cells
        try:
            TargetFields.model_validate(fields)
        except ValidationError as e:
            reason = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'row'}: {plain(err['msg'])}"
                for err in e.errors()
            )
            yield line, Rejected(line, reason)
            continue
        yield line, fields


class ImportState:
    """The batches of one (outdial, file content) already imported, kept beside the file."""

    def __init__(self, csv_path: Path, key: str):
        self.path = csv_path.with_name(csv_path.name + ".outdial-import.json")
        self.key = key
        self.done: set[int] = set()
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved.get("key") == key:
                self.done = set(saved.get("done", []))

    def mark(self, batch: int) -> None:
        self.done.add(batch)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "done": sorted(self.done)}))
        tmp.replace(self.path)  # atomic: a crash leaves the old state or the new

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class Plan:
    key: str  # the outdial and the file's content: what makes a batch the same batch
    batches: list[list[dict[str, Any]]]
    summary: Summary


# The JSON of one batch's targets, at most: a command is at most 16 MiB (CONTRACT 3),
# and the rest of the command needs a little room.
MAX_BATCH_BYTES = MAX_COMMAND_BYTES - 64 * 1024


def plan(
    csv_path: Path,
    customer_id: UUID,
    outdial_id: UUID,
    batch_size: int = MAX_TARGETS_PER_COMMAND,
    batch_bytes: int = MAX_BATCH_BYTES,
) -> Plan:
    """Read and check every row; cut the good ones into batches of at most
    `batch_size` rows and `batch_bytes` bytes of JSON."""
    content = csv_path.read_bytes()
    key = f"{customer_id}/{outdial_id}/{hashlib.sha256(content).hexdigest()}"
    summary = Summary()
    batches: list[list[dict[str, Any]]] = [[]]
    size = 0
    for _, parsed in read_rows(content.decode("utf-8-sig")):
        summary.rows += 1
        if isinstance(parsed, Rejected):
            summary.rejected.append(parsed)
            continue
        row_bytes = len(orjson.dumps(parsed)) + 1
        if len(batches[-1]) == batch_size or (batches[-1] and size + row_bytes > batch_bytes):
            batches.append([])
            size = 0
        batches[-1].append(parsed)
        size += row_bytes
    return Plan(key, [b for b in batches if b], summary)


async def import_csv(
    client: OutdialClient,
    customer_id: UUID,
    outdial_id: UUID,
    csv_path: Path,
    *,
    batch_size: int = MAX_TARGETS_PER_COMMAND,
    out: TextIO = sys.stderr,
) -> Summary:
    planned = plan(csv_path, customer_id, outdial_id, batch_size)
    key, batches, summary = planned.key, planned.batches, planned.summary
    # A batch sent again is answered as the first time, with the targets it made
    # then: made before this run began, they were imported before.
    began = timestamp(datetime.now(UTC))
    state = ImportState(csv_path, key)
    if state.done:
        print(f"import: resuming; {len(state.done)} of {len(batches)} batches were done", file=out)
    with progress(sum(len(b) for b in batches), "rows", "import", out) as bar:
        for number, batch in enumerate(batches):
            if number in state.done:
                summary.skipped += len(batch)
                bar.update(len(batch))
                continue
            message_id = str(uuid5(IMPORTS, f"{key}/{number}"))
            added = await client.add_targets(
                customer_id, outdial_id, batch, message_id=message_id, timeout=60, retries=3
            )
            state.mark(number)
            if all(target.tm_create < began for target in added.data.result):
                summary.skipped += len(batch)
            else:
                summary.imported += len(batch)
            bar.update(len(batch))
    state.finish()
    return summary


async def run(
    amqp_url: str, customer_id: UUID, outdial_id: UUID, csv_path: Path, out: TextIO = sys.stderr
) -> int:
    """The console command: import, print a summary and every rejected row."""
    try:
        async with OutdialClient(amqp_url) as client:
            summary = await import_csv(client, customer_id, outdial_id, csv_path, out=out)
    except (errors.OutdialError, ValueError, OSError, TimeoutError) as e:
        print(f"import failed: {e}", file=out)
        return 2
    for rejected in summary.rejected:
        print(f"line {rejected.line}: {rejected.reason}", file=out)
    print(
        f"import: {summary.rows} rows; {summary.imported} imported now, "
        f"{summary.skipped} imported before, {len(summary.rejected)} rejected",
        file=out,
    )
    return 1 if summary.rejected else 0
