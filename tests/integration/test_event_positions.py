"""The positions a commit's events get, on both stores: one each, in the order stored.

Both recorders insert a commit's events in one statement (SQLite by `executemany`,
PostgreSQL as arrays through `unnest`) and hand the inline writes the position of
each: the outbox, the replies and `X-Outdial-Position` rely on the i-th position
being the i-th event's.
"""

from __future__ import annotations

from uuid import uuid4

from services.bootstrap import Runtime
from services.command.domain import Outdial, OutdialTarget
from services.store import read_transaction

TARGETS = 250  # more than a page of anything


def test_each_event_at_its_own_position_in_order(runtime: Runtime) -> None:
    customer = uuid4()
    outdial = Outdial(customer_id=customer, campaign_id=uuid4(), name="o", detail="", data="")
    targets = [
        OutdialTarget(
            customer_id=customer,
            outdial_id=outdial.id,
            name=f"t{i}",
            detail="",
            data="x" * i,
            destinations=[{"type": "tel", "target": "+821100000001"}, None, None, None, None],
        )
        for i in range(TARGETS)
    ]
    uow = runtime.new_uow()
    uow.record([outdial, *targets])
    uow.commit()
    recorded = uow.last_recorded()
    first = recorded.position - TARGETS
    assert recorded.event_count == TARGETS + 1

    recorder = runtime.app.recorder
    table = runtime.store.dialect.table(recorder.events_table_name)
    position = "rowid" if runtime.store.kind == "sqlite" else "notification_id"
    with read_transaction(recorder) as c:
        c.execute(f"SELECT {position}, originator_id FROM {table} ORDER BY {position}")
        stored = [(int(p), str(i).replace("-", "")) for p, i in c.fetchall()]
    expected = [outdial.id, *(t.id for t in targets)]
    assert stored == [(first + n, e.hex) for n, e in enumerate(expected)]
