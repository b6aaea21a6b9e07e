"""The order of a consumer's acks (shared.queue_consumer.Acks).

Each ack is `multiple`: it settles every earlier delivery of the channel, so an
ack reaching the broker after a later one names a tag the broker no longer
knows, and the broker closes the channel. aiormq's bounded write queue lets a
later writer pass one waiting for room, so two acks in flight at once may be
sent out of order: there must never be two.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shared.queue_consumer import Acks


class Delivery:
    """What `Acks` reads of a delivered message; `ack` waits until released."""

    channel = object()

    def __init__(self, tag: int, sent: list[int], release: dict[int, asyncio.Future[None]]):
        self.delivery_tag = tag
        self._sent = sent
        self._release = release

    async def ack(self, multiple: bool = False) -> None:
        assert multiple
        self._sent.append(self.delivery_tag)
        self._release[self.delivery_tag] = asyncio.get_running_loop().create_future()
        await self._release[self.delivery_tag]


async def settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_ack_in_flight_at_a_time_and_the_newest_next() -> None:
    acks = Acks()
    sent: list[int] = []
    release: dict[int, asyncio.Future[None]] = {}
    messages: list[Any] = [Delivery(tag, sent, release) for tag in (1, 2, 3, 4)]
    for message in messages:
        acks.delivered(message)

    acks.done(messages[0])
    await settle_loop()
    assert sent == [1]  # on its way, not yet written

    acks.done(messages[1])
    await settle_loop()
    acks.done(messages[2])
    await settle_loop()
    assert sent == [1], "a second ack went out while the first was in flight"

    release[1].set_result(None)
    await settle_loop()
    assert sent == [1, 3]  # 3 acks 2 as well

    release[3].set_result(None)
    await acks.drain()
    assert sent == [1, 3]  # 4 is not done: nothing more to send


async def test_an_unfinished_delivery_holds_back_the_acks_after_it() -> None:
    acks = Acks()
    sent: list[int] = []
    release: dict[int, asyncio.Future[None]] = {}
    messages: list[Any] = [Delivery(tag, sent, release) for tag in (1, 2, 3)]
    first, second, third = messages
    for message in messages:
        acks.delivered(message)

    acks.done(second)
    acks.done(third)
    await settle_loop()
    assert sent == []

    acks.forget(first)  # rejected, say
    await settle_loop()
    assert sent == [3]
    release[3].set_result(None)
    await acks.drain()
