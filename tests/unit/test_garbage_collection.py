"""What a started process tells the garbage collector (services.bootstrap)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from services.bootstrap import YOUNG_COLLECTION_THRESHOLD, collect_garbage_less


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_a_started_process_freezes_what_it_made_and_collects_young_objects_less(
    restored_collector: None,
) -> None:
    before = gc.get_threshold()
    made_at_start = [object() for _ in range(10)]  # noqa: F841 (kept alive)
    collect_garbage_less()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, before[1], before[2])
    # Cycles made afterwards are still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
