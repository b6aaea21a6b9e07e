"""The projection and the replay: exactly once across crashes, rebuilds while serving."""

from __future__ import annotations

import asyncio
import itertools
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.command.application import OutdialApplication
from services.command.handlers import handle
from services.query import replay
from services.query.projection import Projection
from services.query.read_model import PostgresReadModel, ReadModelMixin, SQLiteReadModel
from shared.commands import parse_command
from tests.expected import TEL
from tests.integration.processes import start, wait_for_log
from tests.integration.stack import running_stack

pytestmark = pytest.mark.integration


def read_model_of(app: OutdialApplication, url: str) -> ReadModelMixin:
    cls = SQLiteReadModel if url.startswith("sqlite") else PostgresReadModel
    rm = app.factory.tracking_recorder(cls)
    rm.create_views()
    assert isinstance(rm, ReadModelMixin)
    return rm


def fill(app: OutdialApplication, outdials: int = 3, targets: int = 40) -> int:
    """Commands of every kind; returns the head position."""
    customer = str(uuid.uuid4())

    def send(**fields: Any) -> dict[str, Any]:
        reply = handle(
            parse_command(orjson.dumps({"customer_id": customer, **fields})), str(uuid.uuid4()), app
        )
        assert reply.status_code == 200, reply
        assert reply.data is not None
        return reply.data

    for n in range(outdials):
        o = send(type="CreateOutdial", name=f"o{n}", detail="", data="")["id"]
        ids = [
            t["id"]
            for t in send(
                type="AddTargets",
                outdial_id=o,
                targets=[
                    {
                        "name": f"t{i}",
                        "detail": "",
                        "data": "",
                        "destination_0": TEL,
                        "destination_3": {"type": "email", "target": "a@example.com"},
                    }
                    for i in range(targets)
                ],
            )["result"]
        ]
        for i, t in enumerate(ids[: targets // 2]):
            send(
                type="MarkTargetProgressing",
                outdial_id=o,
                target_id=t,
                destination_index=0 if i % 2 else 3,
            )
            send(
                type="UpdateTargetStatus",
                outdial_id=o,
                target_id=t,
                status="done" if i % 3 else "idle",
            )
        send(type="DeleteTarget", outdial_id=o, target_id=ids[-1])
        send(type="UpdateOutdial", outdial_id=o, name="renamed", detail="d")
        if n == 0:
            send(type="DeleteOutdial", outdial_id=o)
    return app.recorder.max_notification_id() or 0


class Crashing(Exception):
    pass


def test_a_projector_that_dies_mid_page_resumes_without_applying_anything_twice(
    store_url: str,
) -> None:
    app = OutdialApplication.from_url(store_url)
    head = fill(app)
    rm = read_model_of(app, store_url)
    committed: list[tuple[int, int]] = []
    original_write = rm.write

    def recording_write(outdials: Any, targets: Any, position: int) -> None:
        before = rm.position()
        original_write(outdials, targets, position)
        committed.append((before, position))

    rm.write = recording_write  # type: ignore[method-assign]
    pages = 0
    original_rows = rm.write_rows

    def dying_write_rows(c: Any, outdials: Any, targets: Any) -> None:
        nonlocal pages
        pages += 1
        original_rows(c, outdials, targets)
        if pages == 3:
            raise Crashing  # after writing rows, before the commit

    rm.write_rows = dying_write_rows  # type: ignore[method-assign]
    with pytest.raises(Crashing):
        Projection(app, rm, page_size=25).catch_up()
    assert 0 < rm.position() < head
    # A new projector (nothing remembered) carries on from the tracked position.
    Projection(app, rm, page_size=25).catch_up()
    assert rm.position() == head
    # The committed pages tile the log: none overlaps another, none is missing.
    assert committed[0][0] == 0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(committed))
    assert committed[-1][1] == head
    del rm.write, rm.write_rows  # the check's own tables are written plainly
    comparison = replay.check(app, rm)
    assert comparison.equal, comparison.differences
    assert comparison.rows > 0
    app.close()


def test_two_projectors_on_one_store_share_the_work_safely(store_url: str) -> None:
    apps = [OutdialApplication.from_url(store_url) for _ in range(2)]
    head = fill(apps[0], outdials=2, targets=60)
    models = [read_model_of(app, store_url) for app in apps]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            Projection(apps[i], models[i], page_size=10).catch_up()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert models[0].position() == head
    comparison = replay.check(apps[1], models[1])
    assert comparison.equal, comparison.differences
    for app in apps:
        app.close()


def test_check_reports_a_corrupted_row(store_url: str) -> None:
    app = OutdialApplication.from_url(store_url)
    fill(app, outdials=1, targets=5)
    rm = read_model_of(app, store_url)
    Projection(app, rm).catch_up()
    assert replay.check(app, rm).equal
    with rm._write() as c:
        c.execute(
            f"UPDATE {rm.table('rm_targets')} SET body = '{{}}' WHERE id = "
            f"(SELECT MIN(id) FROM {rm.table('rm_targets')})"
        )
        c.execute(f"DELETE FROM {rm.table('rm_outdials')}")
    comparison = replay.check(app, rm)
    assert not comparison.equal
    assert any("live {} != rebuilt" in d for d in comparison.differences)
    assert any("missing from the live model" in d for d in comparison.differences)
    replay.rebuild(app, rm)
    assert replay.check(app, rm).equal
    app.close()


async def test_a_projector_process_killed_mid_stream_resumes(
    store_url: str, tmp_path: Path
) -> None:
    app = OutdialApplication.from_url(store_url)
    head = await asyncio.to_thread(fill, app, 6, 400)
    rm = read_model_of(app, store_url)
    env = {"OUTDIAL_DATABASE_URL": store_url}
    process = start(["projector"], tmp_path, **env)
    await wait_for_log(process, "ready")
    for _ in range(400):
        if rm.position() > 0:
            break
        await asyncio.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    process = start(["projector"], tmp_path, **env)
    try:
        for _ in range(600):
            if rm.position() == head:
                break
            await asyncio.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    assert process.returncode == 0
    assert rm.position() == head
    comparison = await asyncio.to_thread(replay.check, app, rm)
    assert comparison.equal, comparison.differences
    app.close()


async def test_a_replay_during_reads_serves_every_read_and_ends_equal(
    store_url: str, tmp_path: Path
) -> None:
    async with running_stack(store_url, tmp_path) as stack:
        app = stack.rt.app
        head = await asyncio.to_thread(fill, app, 3, 300)
        stack.rt.stored.notify()
        assert await stack.rt.board.wait_for(head, 30)
        token = stack.token()
        statuses: list[int] = []
        done = asyncio.Event()

        async def reader() -> None:
            while not done.is_set():
                status, _, _ = await stack.call("GET", "/v1.0/outdials", token)
                statuses.append(status)

        readers = [asyncio.create_task(reader()) for _ in range(3)]
        await asyncio.to_thread(replay.rebuild, app, stack.rt.read_model)
        more = await asyncio.to_thread(fill, app, 1, 10)  # the live projection goes on
        stack.rt.stored.notify()
        assert await stack.rt.board.wait_for(more, 30)
        done.set()
        await asyncio.gather(*readers)
        assert statuses and set(statuses) == {200}
        comparison = await asyncio.to_thread(replay.check, app, stack.rt.read_model)
        assert comparison.equal, comparison.differences
        assert comparison.position == more
