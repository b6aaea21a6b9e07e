"""`kill -9` of `outdial projector` mid-stream and of `outdial replay` mid-replay,
under a steady load of confirmed commands: after restarts the read model equals a
clean rebuild (`outdial replay --check` exits 0), and `--check` does report a row
that differs (exit 1)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from services.command.application import OutdialApplication
from services.command.handlers import handle
from shared.commands import parse_command
from tests.expected import TEL
from tests.integration.processes import ReplyRecorder
from tests.integration.test_projection import fill
from tests.reliability.fleet import (
    Fleet,
    Positions,
    SteadyLoad,
    fleet,
    new_outdial,
    read_log,
    until,
)

pytestmark = pytest.mark.integration


def backlog(store_url: str, thousands: int) -> int:
    """Events of every kind, then `thousands` x 1,000 targets: a log that takes the
    projector and the replay a while. Returns the head."""
    app = OutdialApplication.from_url(store_url)
    try:
        fill(app, outdials=2, targets=40)
        customer = str(uuid.uuid4())

        def send(**fields: object) -> dict[str, object]:
            command = parse_command(orjson.dumps({"customer_id": customer, **fields}))
            reply = handle(command, str(uuid.uuid4()), app)
            assert reply.status_code == 200 and reply.data is not None, reply
            return reply.data

        outdial_id = send(type="CreateOutdial", name="big", detail="", data="")["id"]
        for k in range(thousands):
            targets = [
                {"name": f"b{k}-{i}", "detail": "", "data": "", "destination_0": TEL}
                for i in range(1000)
            ]
            send(type="AddTargets", outdial_id=outdial_id, targets=targets)
        return app.recorder.max_notification_id() or 0
    finally:
        app.close()


async def kill_once_past(
    children: Fleet, process: subprocess.Popen[str], position: Callable[[], int], before: int
) -> int:
    """Kill `process` as soon as its tracked `position()` passes `before`; return
    where it got."""
    await until(lambda: position() > before, 60, "progress", 0.005, alive=process)
    children.kill(process)
    return position()


async def test_projector_and_replay_killed_mid_stream_leave_a_model_equal_to_a_rebuild(
    tmp_path: Path, store_url: str, scale: int
) -> None:
    head = await asyncio.to_thread(backlog, store_url, 5 * scale)
    at = Positions(store_url)
    async with fleet(tmp_path, store_url) as children, ReplyRecorder() as recorder:
        await children.start("command")
        customer, outdial_id = await new_outdial(recorder)
        load = SteadyLoad(recorder, customer, outdial_id, rate=50)
        load.start()

        # The projector, twice killed while it works through the backlog.
        killed_at = [0]
        for _ in range(2):
            projector = children.spawn_to_be_killed("projector")
            killed_at.append(
                await kill_once_past(children, projector, at.projection, killed_at[-1])
            )
        assert killed_at[-1] < head, killed_at  # mid-stream; and it resumed each time
        await children.start("projector")

        # A replay, twice killed mid-rebuild (its own tables and position, not yet
        # swapped in), then one to the end, all while the live projection goes on.
        replayed_to = [0]
        for _ in range(2):
            replaying = children.spawn_to_be_killed("replay")
            replayed_to.append(
                await kill_once_past(children, replaying, at.replay, replayed_to[-1])
            )
        assert replayed_to[-1] < head, replayed_to  # resumed, not started again, not swapped
        done = await asyncio.to_thread(children.run, "replay")
        assert done.returncode == 0, done.stderr
        assert "the rebuilt read model is live" in done.stderr

        await load.stop()
        await recorder.wait_until(len(load.confirmed) + 1, timeout=60)
        await until(lambda: at.projection() == at.head(), 60, "the projector caught up")

        check = await asyncio.to_thread(children.run, "replay", "--check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.strip().endswith("equal"), check.stdout
        log = await asyncio.to_thread(read_log, store_url)
        rows = await asyncio.to_thread(count_targets, at)
        assert rows == sum(log.created.values())

        # --check can tell: one row made wrong, and it says which, and exits 1.
        target_id = await asyncio.to_thread(corrupt_one_target, at)
        check = await asyncio.to_thread(children.run, "replay", "--check")
        assert check.returncode == 1, check.stdout + check.stderr
        assert f"rm_targets {target_id}: live {{}} != rebuilt" in check.stdout
    at.close()
    print(
        f"backlog {head}, projector killed at {killed_at[1:]}, "
        f"replay killed at {replayed_to[1:]}, "
        f"{len(load.confirmed)} commands confirmed meanwhile, {rows} target rows"
    )


def count_targets(at: Positions) -> int:
    with at.read_model._read() as c:
        c.execute(f"SELECT COUNT(*) FROM {at.read_model.table('rm_targets')}")
        return int(c.fetchone()[0])


def corrupt_one_target(at: Positions) -> str:
    rm = at.read_model
    with rm._write() as c:
        c.execute(f"SELECT MIN(id) FROM {rm.table('rm_targets')}")
        row = c.fetchone()
        target_id = str(row[0] if not isinstance(row, dict) else next(iter(row.values())))
        c.execute(
            rm._sql(f"UPDATE {rm.table('rm_targets')} SET body = '{{}}' WHERE id = ?"),
            (target_id,),
        )
    return target_id
