"""The aggregates' rules, without any I/O."""

from __future__ import annotations

import uuid

import pytest

from services.command.domain import (
    Conflict,
    Outdial,
    OutdialTarget,
)
from services.command.receipts import receipt_key

TEL = {"type": "tel", "target": "+15559876543", "target_name": "", "name": "", "detail": ""}


def new_outdial() -> Outdial:
    return Outdial(
        customer_id=uuid.uuid4(), campaign_id=uuid.UUID(int=0), name="n", detail="d", data=""
    )


def new_target(destinations: list[dict[str, str] | None] | None = None) -> OutdialTarget:
    return OutdialTarget(
        customer_id=uuid.uuid4(),
        outdial_id=uuid.uuid4(),
        name="t",
        detail="",
        data="",
        destinations=destinations or [TEL, None, None, None, None],
    )


def test_a_new_outdial_was_never_updated_nor_deleted() -> None:
    o = new_outdial()
    assert o.tm_update is None
    assert o.tm_delete is None
    assert o.tm_create == o.created_on


def test_an_update_sets_tm_update() -> None:
    o = new_outdial()
    o.update(name="new", detail="new detail")
    assert (o.name, o.detail) == ("new", "new detail")
    assert o.tm_update is not None and o.tm_update >= o.tm_create
    assert o.tm_delete is None


def test_delete_sets_tm_delete_and_tm_update() -> None:
    o = new_outdial()
    o.delete()
    assert o.tm_delete == o.tm_update == o.modified_on
    assert not o.belongs_to(o.customer_id)


def test_an_outdial_belongs_to_its_customer_only() -> None:
    o = new_outdial()
    assert o.belongs_to(o.customer_id)
    assert not o.belongs_to(uuid.uuid4())


def test_the_given_id_is_kept() -> None:
    given = uuid.uuid4()
    o = Outdial(
        id=given,
        customer_id=uuid.uuid4(),
        campaign_id=uuid.UUID(int=0),
        name="",
        detail="",
        data="",
    )
    assert o.id == given


def test_every_change_is_an_event() -> None:
    o = new_outdial()
    o.update(name="a", detail="b")
    o.update_campaign(uuid.uuid4())
    o.update_data("x")
    o.delete()
    names = [type(e).__name__ for e in o.collect_events()]
    assert names == ["Created", "Updated", "CampaignUpdated", "DataUpdated", "Deleted"]


def test_a_new_target_is_idle_with_tm_update_equal_to_tm_create() -> None:
    t = new_target()
    assert t.status == "idle"
    assert t.try_counts == [0, 0, 0, 0, 0]
    assert t.tm_update == t.tm_create


def test_a_target_needs_five_slots_and_one_destination() -> None:
    with pytest.raises(ValueError, match="five destination slots"):
        new_target([None, None, None, None, None])


def test_start_try_counts_and_progresses() -> None:
    t = new_target([None, None, TEL, None, None])
    t.start_try(2)
    assert t.status == "progressing"
    assert t.try_counts == [0, 0, 1, 0, 0]


@pytest.mark.parametrize(
    ("prepare", "code"),
    [
        (lambda t: t.start_try(0), "target_progressing"),
        (lambda t: (t.start_try(0), t.update_status("done")), "target_done"),
    ],
)
def test_start_try_is_refused_unless_idle(prepare, code: str) -> None:  # type: ignore[no-untyped-def]
    t = new_target()
    prepare(t)
    version = t.version
    with pytest.raises(Conflict) as e:
        t.start_try(0)
    assert e.value.code == code
    assert t.version == version  # nothing recorded


def test_start_try_on_an_absent_destination_is_refused() -> None:
    t = new_target()
    with pytest.raises(Conflict) as e:
        t.start_try(3)
    assert e.value.code == "destination_absent"
    assert t.try_counts == [0, 0, 0, 0, 0]


def test_a_result_sets_done_or_idle() -> None:
    t = new_target()
    t.start_try(0)
    t.update_status("idle")
    assert t.status == "idle"
    t.start_try(0)
    t.update_status("done")
    assert t.status == "done"
    assert t.try_counts[0] == 2
    with pytest.raises(ValueError):
        t.update_status("progressing")


@pytest.mark.parametrize("status", ["idle", "done"])
def test_a_result_needs_a_try_in_progress(status: str) -> None:
    t = new_target()
    with pytest.raises(Conflict) as e:
        t.update_status(status)
    assert e.value.code == "target_not_progressing"
    t.start_try(0)
    t.update_status("done")
    with pytest.raises(Conflict):
        t.update_status("idle")  # a late report does not reopen a done target
    assert t.status == "done"


def test_next_destination_skips_gaps_zero_maxima_and_exhausted() -> None:
    t = new_target([None, TEL, TEL, None, TEL])
    assert t.next_destination([5, 5, 5, 5, 5]) == 1
    assert t.next_destination([5, 0, 5, 5, 5]) == 2  # max 0: never tried
    t.start_try(1)
    t.update_status("idle")
    assert t.next_destination([5, 1, 5, 5, 5]) == 2  # destination 1 exhausted
    assert t.next_destination([5, 1, 0, 5, 0]) is None
    assert not t.is_available([5, 1, 0, 5, 0])
    assert t.status == "idle"  # exhausted targets stay idle
    assert t.is_available([5, 2, 0, 0, 0])


def test_receipts_are_scoped_to_the_customer() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert receipt_key(a, "m") == receipt_key(a, "m")
    assert receipt_key(a, "m") != receipt_key(b, "m")
    assert receipt_key(a, "m") != receipt_key(a, "n")
    # Any message_id AMQP carries is a key: NULs, the 255 bytes of a shortstr.
    assert receipt_key(a, "m\0") != receipt_key(a, "m")
    assert len(receipt_key(a, "x" * 255)) == 64


def test_timestamps_are_utc_with_microseconds() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from shared.shapes import NEVER, timestamp

    assert timestamp(datetime(2022, 4, 28, 1, 41, 40, 503790, tzinfo=UTC)) == (
        "2022-04-28 01:41:40.503790"
    )
    two_hours_east = timezone(timedelta(hours=2))
    assert timestamp(datetime(2022, 4, 28, 3, 41, 40, 5, tzinfo=two_hours_east)) == (
        "2022-04-28 01:41:40.000005"
    )
    assert timestamp(datetime(2022, 4, 28, 1, 41, 40, tzinfo=UTC)) == "2022-04-28 01:41:40.000000"
    assert timestamp(None) == NEVER
