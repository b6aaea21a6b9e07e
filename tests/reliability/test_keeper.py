"""The read model's keeper: `outdial projector` checks now and then (and every
process at its start, `upgrade.prepare`) that the read model has every event's
rows, and rebuilds it from the events when it has not. Commands write the read
model in their own transactions, so a read model of this version is never
behind: while commands write, the check must never find it so. (A false
"behind" costs a rebuild of the whole store, its writers held off at the swap;
the soak test met one.)
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from services.query import replay
from tests.fixtures import Writer

pytestmark = pytest.mark.integration

CHECKING = 5.0  # seconds of checks while a writer writes


def test_the_read_model_is_never_found_behind_while_commands_write(store_url: str) -> None:
    writer = Writer(store_url)
    customer = str(uuid.uuid4())
    made = writer.send(customer, "CreateOutdial", name="o", detail="", data="")
    assert made.data is not None
    outdial_id = made.data["id"]
    stop = threading.Event()
    written: list[int] = []
    errors: list[BaseException] = []

    def keep_writing() -> None:
        try:
            while not stop.is_set():
                reply = writer.send(
                    customer, "UpdateOutdialData", outdial_id=outdial_id, data=str(len(written))
                )
                assert reply.position is not None, reply
                written.append(reply.position)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=keep_writing)
    thread.start()
    checks, behind = 0, 0
    try:
        deadline = time.monotonic() + CHECKING
        while time.monotonic() < deadline and not behind:
            behind += not replay.is_current(writer.app)
            checks += 1
    finally:
        stop.set()
        thread.join(30)
        writer.close()
    assert errors == []
    assert behind == 0, f"found behind at check {checks}, with {len(written)} writes meanwhile"
    assert len(written) > 100, "the writer hardly wrote: the checks prove nothing"
