"""`kill -9` of `outdial replay` mid-rebuild, under a steady load of confirmed
commands: the live read model goes on serving every write (its position is the
store's head at every moment, and it holds every row), a later replay completes
and swaps its tables in under the same load, and afterwards the read model
equals a clean rebuild (`outdial replay --check` exits 0); `--check` does report
a row that differs (exit 1).

A replay rebuilds into tables of its own (`*_next`) and swaps them in at its end,
in one transaction; killed before that, it leaves only those tables behind, which
the next replay drops and starts again. (The projector of earlier versions,
which followed the log, is gone: commands write the read model in their own
transactions, so there is no follower left to kill.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.processes import ReplyRecorder
from tests.reliability.fleet import (
    Fleet,
    Positions,
    SteadyLoad,
    backlog,
    fleet,
    new_outdial,
    read_log,
    until,
)

pytestmark = pytest.mark.integration


async def kill_mid_rebuild(children: Fleet, at: Positions) -> int:
    """Start `outdial replay` and kill it once it has written rows aside (into
    tables it made itself: not those an earlier one left); return how many."""
    replaying = children.spawn_to_be_killed("replay")
    fresh = False

    def writing_aside() -> bool:
        nonlocal fresh
        rows = at.rebuilt_rows()
        fresh = fresh or rows == 0  # its own tables, still empty
        return fresh and bool(rows)

    await until(writing_aside, 60, "the replay writes rows aside", 0.005, alive=replaying)
    children.kill(replaying)
    rows = at.rebuilt_rows()
    assert rows is not None
    return rows


async def test_a_replay_killed_mid_rebuild_leaves_the_live_model_serving_and_whole(
    tmp_path: Path, store_url: str, scale: int
) -> None:
    # Two of the rebuild's batches (20,000 rows each): a kill lands between them.
    head = await asyncio.to_thread(backlog, store_url, 25 * scale)
    at = Positions(store_url)
    async with fleet(tmp_path, store_url) as children, ReplyRecorder() as recorder:
        await children.start("command")
        customer, outdial_id = await new_outdial(recorder)
        load = SteadyLoad(recorder, customer, outdial_id, rate=50)
        load.start()

        killed_at = []
        for _ in range(2):
            killed_at.append(await kill_mid_rebuild(children, at))
            # Mid-way: fewer rows aside than the live model holds.
            assert killed_at[-1] < await asyncio.to_thread(at.target_rows), killed_at
            # The live model was not touched: it has every event stored so far.
            model, stored = await asyncio.to_thread(at.read_model_and_head)
            assert model == stored > head, (model, stored)

        # One to its end, while the commands go on writing the live model.
        done = await asyncio.to_thread(children.run, "replay")
        assert done.returncode == 0, done.stderr
        assert "; it is live" in done.stderr, done.stderr
        assert await asyncio.to_thread(at.rebuilt_rows) is None  # swapped in: none left aside

        await load.stop()
        await recorder.wait_until(len(load.confirmed) + 1, timeout=60)
        model, stored = await asyncio.to_thread(at.read_model_and_head)
        assert model == stored, (model, stored)
        check = await asyncio.to_thread(children.run, "replay", "--check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.strip().endswith("equal"), check.stdout
        log = await asyncio.to_thread(read_log, store_url)
        rows = await asyncio.to_thread(at.target_rows)
        assert rows == sum(log.created.values())
        assert set(load.confirmed) <= set(log.created)

        # --check can tell: one row made wrong, and it says which, and exits 1.
        target_id = await asyncio.to_thread(at.corrupt_one_target)
        check = await asyncio.to_thread(children.run, "replay", "--check")
        assert check.returncode == 1, check.stdout + check.stderr
        assert f"rm_targets {target_id}: live {{}} != rebuilt" in check.stdout
    at.close()
    print(
        f"backlog {head}, replay killed at {killed_at} rows aside, "
        f"{len(load.confirmed)} commands confirmed meanwhile, {rows} target rows"
    )
