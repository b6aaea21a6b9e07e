"""The progress bars read as counts of things: `9/9 events`, `3/3 rows`, never tqdm's
scaled `9.00/9.00 event` (issue 14, item 7). On an SQLite file, without a broker."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from services.importer import import_csv
from services.progress import progress
from shared.shapes import timestamp
from tests.expected import TEL
from tests.fixtures import Writer

OUTDIAL = str(Path(sys.executable).parent / "outdial")
SCALED = re.compile(r"\d\.\d\d/\d")  # what unit_scale prints: 9.00/9.00


def last_bar(text: str, desc: str) -> str:
    """The bar's final rendering: tqdm redraws it after each carriage return."""
    drawn = [
        part for part in re.split(r"[\r\n]", text) if part.startswith(f"{desc}:") and "|" in part
    ]
    assert drawn, text
    return drawn[-1]


def test_a_bar_counts_in_whole_things_and_names_them() -> None:
    out = io.StringIO()
    with progress(9, "events", "replay", out) as bar:
        for _ in range(9):
            bar.update(1)
    drawn = last_bar(out.getvalue(), "replay")
    assert "| 9/9 events [" in drawn and drawn.endswith(" events/s]"), drawn
    assert "0/9 events [" in out.getvalue()  # its first drawing too
    assert not SCALED.search(out.getvalue()), out.getvalue()


def test_the_replay_bar_counts_events(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/outdial.sqlite3"
    writer = Writer(store)
    try:
        customer = str(uuid.uuid4())
        made = writer.send(customer, type_="CreateOutdial", name="o", detail="", data="")
        assert made.data is not None
        targets = [
            {"name": f"t{i}", "detail": "", "data": "", "destination_0": TEL} for i in range(8)
        ]
        added = writer.send(
            customer, type_="AddTargets", outdial_id=made.data["id"], targets=targets
        )
        assert added.status_code == 200, added
    finally:
        writer.close()

    # As a user runs it: the console script, its bar on stderr.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")}
    environment |= {"OUTDIAL_DATABASE_URL": store, "OUTDIAL_VAR_DIR": str(tmp_path / "var")}
    result = subprocess.run(
        [OUTDIAL, "replay"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    bar = last_bar(result.stderr, "replay")
    assert "9/9 events" in bar, bar  # one outdial and its eight targets
    assert not SCALED.search(result.stderr), result.stderr
    assert " event/s" not in result.stderr and " event]" not in result.stderr


class _Client:
    """Answers AddTargets as the service does the first time: targets made now."""

    def __init__(self) -> None:
        self.sent = 0

    async def add_targets(self, customer: Any, outdial: Any, batch: list[Any], **_: Any) -> Any:
        self.sent += len(batch)
        made = [SimpleNamespace(tm_create=timestamp(datetime.now(UTC))) for _ in batch]
        return SimpleNamespace(data=SimpleNamespace(result=made))


def test_the_import_bar_counts_rows(tmp_path: Path) -> None:
    path = tmp_path / "targets.csv"
    path.write_text(
        "name,destination_0_type,destination_0_target\n"
        + "".join(f"t{i},tel,+1555987654{i}\n" for i in range(3))
    )
    out = io.StringIO()
    client: Any = _Client()
    summary = asyncio.run(import_csv(client, uuid.uuid4(), uuid.uuid4(), path, out=out))
    assert (summary.rows, summary.imported, client.sent) == (3, 3, 3)
    bar = last_bar(out.getvalue(), "import")
    assert "3/3 rows" in bar, bar
    assert not SCALED.search(out.getvalue()), out.getvalue()
