"""Names on the broker (CONTRACT 3 and 4), and the declarations both the service and
its tools make, in one place."""

from __future__ import annotations

import logging

import aiormq.exceptions
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

COMMAND_QUEUE = "outdial.commands"
DEAD_LETTER_QUEUE = "outdial.commands.dead"
EVENT_EXCHANGE = "outdial.events"
JSON = "application/json"
# The routing keys of CONTRACT 4: one per kind of event.
EVENT_TYPES = (
    "outdial_created",
    "outdial_updated",
    "outdial_deleted",
    "outdialtarget_created",
    "outdialtarget_updated",
    "outdialtarget_deleted",
)

# The dead-letter queue is bounded: a flood of junk must not fill the broker's
# disk. Past either bound the oldest messages are dropped (`drop-head`): the
# newest failures are the ones an operator looks at first.
DEAD_LETTER_MAX_MESSAGES = 10_000
DEAD_LETTER_MAX_BYTES = 64 * 1024 * 1024
DEAD_LETTER_ARGUMENTS = {
    "x-max-length": DEAD_LETTER_MAX_MESSAGES,
    "x-max-length-bytes": DEAD_LETTER_MAX_BYTES,
    "x-overflow": "drop-head",
}
# What an operator runs to bound a dead-letter queue made by an earlier version
# that still holds messages (a queue's arguments cannot change; a policy can).
DEAD_LETTER_POLICY = (
    "rabbitmqctl set_policy -p VHOST --apply-to queues outdial-dead-letters "
    "'^outdial\\.commands\\.dead$' "
    f'\'{{"max-length":{DEAD_LETTER_MAX_MESSAGES},'
    f'"max-length-bytes":{DEAD_LETTER_MAX_BYTES},"overflow":"drop-head"}}\''
)

log = logging.getLogger("outdial.bus")


async def declare_dead_letter_queue(connection: AbstractRobustConnection) -> AbstractQueue:
    """`outdial.commands.dead`, bounded. An earlier version declared it without
    bounds, and a queue's arguments cannot change: such a queue, empty, is
    replaced by a bounded one; still holding dead letters, it is kept as it is
    (everything works) and the log says, once, what to run to bound it."""
    channel = await connection.channel()
    try:
        return await channel.declare_queue(
            DEAD_LETTER_QUEUE, durable=True, arguments=DEAD_LETTER_ARGUMENTS
        )
    except aiormq.exceptions.ChannelPreconditionFailed:
        pass  # the channel is closed by the broker
    channel = await connection.channel()
    try:
        old = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        await old.delete(if_empty=True, if_unused=False)
    except aiormq.exceptions.ChannelPreconditionFailed:
        channel = await connection.channel()
        log.warning(
            f"{DEAD_LETTER_QUEUE} was made by an earlier version, without bounds, and "
            f"holds dead letters; to bound it, run: {DEAD_LETTER_POLICY}"
        )
        return await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
    return await channel.declare_queue(
        DEAD_LETTER_QUEUE, durable=True, arguments=DEAD_LETTER_ARGUMENTS
    )
