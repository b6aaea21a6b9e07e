"""Optimistic concurrency: writers racing on one aggregate never lose an update.

Two applications on one store stand for two processes of the service; each
runs commands from several threads, all on the same target.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest

from services.command.handlers import Reply
from tests.expected import TEL
from tests.fixtures import Writer

pytestmark = pytest.mark.integration


def send(app: Writer, customer: str, type_: str, **fields: Any) -> Reply:
    return app.send(customer, type_, **fields)


def test_racing_writers_lose_no_update(store_url: str) -> None:
    apps = [Writer(store_url) for _ in range(2)]
    customer = str(uuid.uuid4())
    outdial_id = send(apps[0], customer, "CreateOutdial", name="", detail="", data="").data["id"]  # type: ignore[index]
    target_id = send(
        apps[0],
        customer,
        "AddTarget",
        outdial_id=outdial_id,
        name="",
        detail="",
        data="",
        destination_0=TEL,
    ).data["id"]  # type: ignore[index]
    ids = {"outdial_id": outdial_id, "target_id": target_id}
    outcomes: Counter[int] = Counter()
    lock = threading.Lock()

    def dialer(app: Writer) -> None:
        for _ in range(15):
            r = send(app, customer, "MarkTargetProgressing", destination_index=0, **ids)
            with lock:
                outcomes[r.status_code] += 1
            if r.status_code == 200:
                assert (
                    send(app, customer, "UpdateTargetStatus", status="idle", **ids).status_code
                    == 200
                )

    threads = [threading.Thread(target=dialer, args=(apps[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    target = apps[1].app.repository.get(uuid.UUID(target_id))
    # Every try that was answered 200 is counted, and only those: no update was lost.
    assert target.try_counts[0] == outcomes[200]
    assert set(outcomes) <= {200, 409}
    assert outcomes[200] > 0
    assert target.status == "idle"
    for app in apps:
        app.close()


def test_racing_creates_of_one_id_make_one_outdial(store_url: str) -> None:
    apps = [Writer(store_url) for _ in range(2)]
    customer = str(uuid.uuid4())
    given = str(uuid.uuid4())
    replies: list[Reply] = []
    barrier = threading.Barrier(8)

    def create(app: Writer) -> None:
        barrier.wait()
        replies.append(send(app, customer, "CreateOutdial", id=given, name="", detail="", data=""))

    threads = [threading.Thread(target=create, args=(apps[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in replies) == [200] + [409] * 7
    for app in apps:
        app.close()
