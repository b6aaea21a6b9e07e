"""`outdial import`: CSV rows in as AddTargets batches, bad rows reported, resumable."""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from services.importer import read_rows
from shared.client import OutdialClient
from tests.fixtures import CommandSide
from tests.integration.processes import OUTDIAL
from tests.reliability.load import stored_target_names, wait_for

pytestmark = pytest.mark.integration

COLUMNS = ["name", "detail", "data"] + [
    f"destination_{n}_{f}" for n in range(2) for f in ("type", "target", "name")
]


def write_csv(path: Path, rows: int, bad: dict[int, dict[str, str]]) -> None:
    """`rows` targets, one tel destination each; the rows in `bad` overridden."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for i in range(rows):
            row = {
                "name": f"row {i}",
                "detail": "d",
                "data": "{}",
                "destination_0_type": "tel",
                "destination_0_target": f"+1555{i:07d}",
                "destination_1_type": "email" if i % 3 == 0 else "",
                "destination_1_target": f"r{i}@example.com" if i % 3 == 0 else "",
            }
            writer.writerow(row | bad.get(i, {}))


def outdial_import(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [OUTDIAL, "import", *args],
        env=os.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def finished(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    _, err = await asyncio.wait_for(asyncio.to_thread(process.communicate), timeout)
    return process.returncode, err


def test_rows_are_checked_like_commands(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    write_csv(
        path,
        5,
        {
            1: {"destination_0_target": "555-1234"},  # not E.164
            4: {"destination_0_type": "", "destination_0_target": ""},  # no destination
        },
    )
    parsed = list(read_rows(path.read_text()))
    assert [line for line, _ in parsed] == [2, 3, 4, 5, 6]  # the header is line 1
    reasons = {line: getattr(p, "reason", None) for line, p in parsed}
    assert reasons[2] is None and reasons[4] is None and reasons[5] is None
    assert "destination_0.target" in str(reasons[3]) and "E.164" in str(reasons[3])
    assert "at least one destination" in str(reasons[6])
    good = parsed[0][1]
    assert isinstance(good, dict)
    assert good["destination_1"]["type"] == "email" and "destination_2" not in good


async def test_a_campaign_list_is_imported_once_even_when_interrupted(
    service: CommandSide, client: OutdialClient, tmp_path: Path, store_url: str
) -> None:
    customer = uuid.uuid4()
    outdial = (await client.create_outdial(customer, name="from csv")).data
    path = tmp_path / "list.csv"
    rows, bad = 3500, {7: {"destination_0_target": "nope"}, 2100: {"name": "x" * 2000}}
    write_csv(path, rows, bad)
    args = ["--customer-id", str(customer), "--outdial-id", str(outdial.id), str(path)]
    state = path.with_name(path.name + ".outdial-import.json")

    # Interrupted after its first batch (SIGKILL: no chance to tidy up) ...
    first = outdial_import(*args)
    await wait_for(state.exists, 60, "a first batch imported")
    first.kill()
    first.wait()
    # ... and run again: it resumes, and no row is added twice.
    code, err = await finished(outdial_import(*args))
    assert code == 1, err  # some rows were rejected
    assert "import: resuming" in err
    assert "line 9: destination_0.target" in err  # row 7 is line 9
    assert "line 2102: name" in err
    assert f"import: {rows} rows;" in err and "2 rejected" in err
    assert not state.exists()

    stored = stored_target_names(store_url)
    assert sum(stored.values()) == rows - 2
    assert max(stored.values()) == 1
    assert "row 7" not in stored and "row 2100" not in stored

    # A third run of the same file adds nothing either.
    code, err = await finished(outdial_import(*args))
    assert code == 1 and f"0 imported now, {rows - 2} imported before" in err  # the receipts
    assert stored_target_names(store_url) == stored


async def test_an_unknown_outdial_fails_clearly(service: CommandSide, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    write_csv(path, 3, {})
    code, err = await finished(
        outdial_import(
            "--customer-id", str(uuid.uuid4()), "--outdial-id", str(uuid.uuid4()), str(path)
        )
    )
    assert code == 2
    assert "import failed: outdial_not_found" in err
