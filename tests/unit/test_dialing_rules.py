"""The dialing rules of CONTRACT 2 on the aggregate, property-based (hypothesis)."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from services.command.domain import Conflict, OutdialTarget

TEL = {"type": "tel", "target": "+15559876543", "target_name": "", "name": "", "detail": ""}

presence = st.lists(st.booleans(), min_size=5, max_size=5).filter(any)
maxima = st.lists(st.integers(min_value=0, max_value=3), min_size=5, max_size=5)
operations = st.lists(
    st.sampled_from(["claim", "claim", "claim", "idle", "done", "delete"]), max_size=40
)


def expected_destination(present: list[bool], counts: list[int], most: list[int]) -> int | None:
    """CONTRACT 2, written out: the first present destination with tries left."""
    for i in range(5):
        if present[i] and counts[i] < most[i]:
            return i
    return None


@settings(max_examples=500, deadline=None)
@given(present=presence, most=maxima, ops=operations)
def test_claims_follow_the_destination_rules(
    present: list[bool], most: list[int], ops: list[str]
) -> None:
    target = OutdialTarget(
        customer_id=uuid.uuid4(),
        outdial_id=uuid.uuid4(),
        name="",
        detail="",
        data="",
        destinations=[TEL if p else None for p in present],
    )
    tries = 0
    for op in ops:
        counts = list(target.try_counts)
        wanted = expected_destination(present, counts, most)
        available = target.status == "idle" and not target.deleted and wanted is not None
        # A target is offered if and only if it is available.
        assert target.is_available(most) == available
        if op == "claim":
            if available:
                index = target.next_destination(most)
                assert index == wanted
                target.start_try(index)
                tries += 1
                assert target.status == "progressing"
                assert target.try_counts[index] == counts[index] + 1
        elif op in ("idle", "done") and target.status == "progressing":
            target.update_status(op)
        elif op in ("idle", "done"):
            try:
                target.update_status(op)
            except Conflict:
                pass
            else:
                raise AssertionError("a result without a try in progress was accepted")
        elif op == "delete" and not target.deleted:
            target.delete()
        # Try counts never pass their maximum, absent destinations are never tried,
        # and every try is counted exactly once.
        assert all(c <= m for c, m in zip(target.try_counts, most, strict=True))
        assert all(c == 0 for c, p in zip(target.try_counts, present, strict=True) if not p)
        assert sum(target.try_counts) == tries
    exhausted = expected_destination(present, list(target.try_counts), most) is None
    if exhausted and target.status != "progressing":
        # Exhausted targets are never available, and stay as they were: idle unless done.
        assert not target.is_available(most)
        assert target.status in ("idle", "done")
