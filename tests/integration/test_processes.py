"""The `outdial` console script as a process: start, serve, stop, crash, restart."""

from __future__ import annotations

import asyncio
import re
import signal
import stat
import subprocess
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import jwt
import pytest

from services.command.application import OutdialApplication
from tests.expected import TEL
from tests.fixtures import purge_command_queues
from tests.integration.processes import (
    OUTDIAL,
    ReplyRecorder,
    free_port,
    start,
    wait_for_log,
)

pytestmark = pytest.mark.integration


def created_targets(store_url: str) -> int:
    app = OutdialApplication.from_url(store_url)
    try:
        notifications = app.recorder.select_notifications(start=None, limit=10**9)
        return sum(n.topic.endswith("OutdialTarget.Created") for n in notifications)
    finally:
        app.close()


def healthz_status(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return int(r.status)


def mint_token(cwd: Path, customer: uuid.UUID) -> str:
    done = subprocess.run(
        [OUTDIAL, "token", "--customer-id", str(customer)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def add_target(customer: str, outdial_id: str, i: int) -> dict[str, object]:
    return {
        "type": "AddTarget",
        "customer_id": customer,
        "outdial_id": outdial_id,
        "name": f"t{i}",
        "detail": "",
        "data": "",
        "destination_0": TEL,
    }


async def new_outdial(recorder: ReplyRecorder, customer: str) -> str:
    await recorder.publish(
        {"type": "CreateOutdial", "customer_id": customer, "name": "", "detail": "", "data": ""},
        message_id="outdial",
    )
    await recorder.wait_until(1)
    return str(recorder.replies["outdial"][0]["data"]["id"])


async def test_run_serves_healthz_makes_a_secret_and_stops_on_sigterm(tmp_path: Path) -> None:
    await purge_command_queues()
    port = free_port()
    process = start(["run"], tmp_path, OUTDIAL_HTTP_PORT=str(port))
    try:
        await wait_for_log(process, "ready")
        status = await asyncio.to_thread(healthz_status, port)
        assert status == 200
        secret_file = tmp_path / "var" / "jwt.secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert (tmp_path / "var" / "outdial.sqlite3").exists()  # the embedded default store

        customer = uuid.uuid4()
        token = await asyncio.to_thread(mint_token, tmp_path, customer)
        claims = jwt.decode(token, secret_file.read_text().strip(), algorithms=["HS256"])
        assert claims["customer_id"] == str(customer)
        assert claims["exp"] > 0

        async with ReplyRecorder() as recorder:
            outdial_id = await new_outdial(recorder, str(customer))
            uuid.UUID(outdial_id)
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    assert f"http://127.0.0.1:{port}/" in out


async def test_replays_beside_run_leave_its_store_whole(tmp_path: Path) -> None:
    """`outdial replay --check` and `outdial replay`, processes of their own beside
    `outdial run` on its SQLite file: the running service goes on storing and
    answering, and nothing it answered is lost. (A check of the file at start that
    opened and closed it dropped SQLite's locks of its process; the replay, on
    closing, then took itself for the file's last user and removed the WAL that
    `outdial run` was writing: its answered writes were gone.)"""
    await purge_command_queues()
    process = start(["run"], tmp_path, OUTDIAL_HTTP_PORT=str(free_port()))
    customer = str(uuid.uuid4())
    store = tmp_path / "var" / "outdial.sqlite3"
    try:
        await wait_for_log(process, "ready")
        async with ReplyRecorder() as recorder:
            outdial_id = await new_outdial(recorder, customer)
            for i, args in enumerate((["replay", "--check"], ["replay"])):
                done = await asyncio.to_thread(
                    subprocess.run, [OUTDIAL, *args], cwd=tmp_path, capture_output=True, text=True
                )
                assert done.returncode == 0, done.stderr
                assert store.with_name(store.name + "-wal").exists()
                await recorder.publish(add_target(customer, outdial_id, i), message_id=f"t{i}")
                await recorder.wait_until(2 + i, timeout=20)
                assert recorder.replies[f"t{i}"][0]["status_code"] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    assert process.returncode == 0
    assert created_targets(f"sqlite:///{store}") == 2


async def test_sigterm_finishes_and_acks_what_is_in_flight(tmp_path: Path, store_url: str) -> None:
    """Stopped mid-burst, the consumer answers and acks every command it took:
    after a restart no command is answered twice and none is lost."""
    await purge_command_queues()
    env = {"OUTDIAL_DATABASE_URL": store_url}
    process = start(["command"], tmp_path, **env)
    customer = str(uuid.uuid4())
    count = 150
    async with ReplyRecorder() as recorder:
        await wait_for_log(process, "consuming")
        outdial_id = await new_outdial(recorder, customer)
        for i in range(count):
            await recorder.publish(add_target(customer, outdial_id, i), message_id=f"m{i}")
        await recorder.wait_until(2)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
        assert process.returncode == 0
        answered_before_restart = len(recorder.replies)

        process = start(["command"], tmp_path, **env)
        try:
            await recorder.wait_until(count + 1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=20)
    assert 1 < answered_before_restart < count + 1
    assert all(len(replies) == 1 for replies in recorder.replies.values())
    assert created_targets(store_url) == count


async def test_a_consumer_killed_mid_load_applies_each_command_once(
    tmp_path: Path, store_url: str
) -> None:
    await purge_command_queues()
    env = {"OUTDIAL_DATABASE_URL": store_url}
    customer = str(uuid.uuid4())
    count = 300
    async with ReplyRecorder() as recorder:
        for attempt in range(2):
            process = start(["command"], tmp_path, **env)
            await wait_for_log(process, "consuming")
            if attempt == 0:
                outdial_id = await new_outdial(recorder, customer)
                for i in range(count):
                    await recorder.publish(add_target(customer, outdial_id, i), message_id=f"m{i}")
                await recorder.wait_until(30)
                process.kill()  # SIGKILL: no clean shutdown, unacked commands are redelivered
                process.communicate(timeout=10)
            else:
                try:
                    await recorder.wait_until(count + 1)
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.communicate(timeout=20)

    del recorder.replies["outdial"]
    assert len(recorder.replies) == count
    # A command answered twice (once before the kill, once after) was answered alike.
    for replies in recorder.replies.values():
        assert all(r == replies[0] for r in replies)
        assert replies[0]["status_code"] == 200
    target_ids = Counter(r[0]["data"]["id"] for r in recorder.replies.values())
    assert len(target_ids) == count
    assert created_targets(store_url) == count


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found[1])


async def test_a_standalone_query_server_tells_the_stores_positions(tmp_path: Path) -> None:
    """`/metrics` of an `outdial query` of its own (no command side, no relay in its
    process) reads the positions from the store, as `/v1.0/progress` does: not 0."""
    await purge_command_queues()
    run_port, query_port = free_port(), free_port()
    run = start(["run"], tmp_path, OUTDIAL_HTTP_PORT=str(run_port))
    query = None
    try:
        await wait_for_log(run, "ready")
        query = start(["query"], tmp_path, OUTDIAL_HTTP_PORT=str(query_port))
        await wait_for_log(query, "ready")
        async with ReplyRecorder() as recorder:
            outdial_id = await new_outdial(recorder, str(uuid.uuid4()))
            for i in range(3):
                customer = recorder.replies["outdial"][0]["data"]["customer_id"]
                await recorder.publish(add_target(customer, outdial_id, i), message_id=f"t{i}")
            await recorder.wait_until(4)
        stored = 4  # the outdial's event and the targets'
        assert await asyncio.to_thread(metric, query_port, "outdial_store_position") == stored
        assert await asyncio.to_thread(metric, query_port, "outdial_projection_position") == stored
        for _ in range(50):  # the relay records what it published every half second
            if await asyncio.to_thread(metric, query_port, "outdial_relay_position") == stored:
                break
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(metric, query_port, "outdial_relay_position") == stored
    finally:
        for process in (query, run):
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.communicate(timeout=15)
