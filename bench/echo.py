"""The bare aio-pika RPC echo server: consume, reply with a body of the same size, ack.

The baseline of the command path: the simplest consumer the bus allows.
    python -m bench.echo QUEUE
"""

from __future__ import annotations

import asyncio
import signal
import sys

import aio_pika

from shared.config import Settings


async def serve(queue_name: str) -> None:
    connection = await aio_pika.connect_robust(Settings().amqp_url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=64)
    queue = await channel.declare_queue(queue_name, durable=True)
    await queue.purge()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if message.reply_to:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    content_type="application/json",
                    correlation_id=message.correlation_id,
                ),
                routing_key=message.reply_to,
            )
        await message.ack()

    await queue.consume(on_message)
    print("ready", flush=True)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await connection.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
