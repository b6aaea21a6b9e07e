"""Reads made together answer as each made alone (services.query.async_reads,
`Queries.run_many`): on PostgreSQL the reader threads send the reads by key of one
kind waiting together as one statement, and equal reads as one."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

from services.bootstrap import Runtime
from services.command.domain import Outdial, OutdialTarget
from services.query.async_reads import ReadThreads
from services.query.queries import Read

TEL = [{"type": "tel", "target": "+821100000001"}, None, None, None, None]


def every_kind_of_read(rt: Runtime) -> list[Read[Any]]:
    """Reads of each kind by key: found, another customer's, deleted, missing, twice."""
    mine, theirs = uuid4(), uuid4()
    outdial = Outdial(customer_id=mine, campaign_id=uuid4(), name="o", detail="", data="")
    other = Outdial(customer_id=theirs, campaign_id=uuid4(), name="p", detail="", data="")
    targets = [
        OutdialTarget(
            customer_id=mine,
            outdial_id=outdial.id,
            name=f"t{i}",
            detail="",
            data=str(i),
            destinations=TEL,
        )
        for i in range(5)
    ]
    targets[1].delete()
    uow = rt.new_uow()
    uow.record([outdial, other, *targets])
    uow.commit()
    q = rt.queries
    c, o, missing = str(mine), str(outdial.id), str(uuid4())
    ids = [str(t.id) for t in targets]
    return [
        q.outdial_read(c, o),
        q.outdial_read(c, str(other.id)),  # another customer's: none
        q.outdial_read(c, missing),
        q.outdial_by_id_read(str(other.id)),
        q.outdial_by_id_read(missing),
        *(q.target_read(c, o, i) for i in ids),  # one of them deleted
        q.target_read(c, str(other.id), ids[0]),  # under another outdial: none
        q.target_read(str(theirs), o, ids[0]),  # another customer's: none
        *(q.target_by_id_read(i) for i in reversed(ids)),
        q.target_by_id_read(missing),
        q.outdial_read(c, o),  # twice in one batch
        q.target_by_id_read(ids[2]),
    ]


def test_run_many_answers_as_run_does(runtime: Runtime) -> None:
    reads = every_kind_of_read(runtime)
    queries = runtime.queries
    alone = [queries.run(read) for read in reads]
    assert alone[0] is not None and alone[1] is None and alone[5] is not None  # found, and not
    if runtime.store.kind == "sqlite":
        assert all(read.many is None for read in reads)  # read on the event loop, one by one
        return
    kinds: dict[str, list[int]] = {}
    for n, read in enumerate(reads):
        assert read.many is not None
        kinds.setdefault(read.many, []).append(n)
    assert len(kinds) == 4
    for positions in kinds.values():
        together = queries.run_many([reads[n] for n in positions])
        assert together == [alone[n] for n in positions]


async def test_reads_waiting_together_answer_each_its_own(runtime: Runtime) -> None:
    queries = runtime.queries
    reads = every_kind_of_read(runtime)
    outdial_id, customer_id = reads[0].params
    page = queries.targets_page_read(customer_id, outdial_id, None, 3)
    reads += [page, page, queries.targets_page_read(customer_id, outdial_id, None, 2), page]
    alone = [queries.run(read) for read in reads]
    assert alone[-1] is not None and alone[-1].joined.count(b'"id"') == 3
    # A key PostgreSQL's text refuses (NUL): that read fails alone, the others of
    # its kind are answered (SQLite takes it, and finds nothing).
    poisoned = queries.target_by_id_read("bad\x00id")
    threads = ReadThreads(queries)
    try:
        for _ in range(3):
            results = await asyncio.gather(
                *(threads.fetch(read) for read in [*reads, poisoned]), return_exceptions=True
            )
            assert results[:-1] == alone
            if runtime.store.kind == "postgres":
                assert isinstance(results[-1], Exception)
            else:
                assert results[-1] is None
    finally:
        threads.close()
