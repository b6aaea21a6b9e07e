"""Connecting to RabbitMQ, for the service and its clients alike: a robust
connection, or one line that says which setting is wrong and why."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractRobustConnection

from shared.config import SettingError


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def connect(amqp_url: str) -> AbstractRobustConnection:
    """A robust connection to the broker, or a SettingError that says why not."""
    parts = urlsplit(amqp_url)
    if parts.scheme not in ("amqp", "amqps"):
        raise SettingError(
            "OUTDIAL_AMQP_URL", f"must start with amqp:// or amqps://, not {amqp_url!r}"
        )
    where = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}"
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    try:
        with _quiet("aiormq.connection"):  # it logs the failure we are about to say better
            return await aio_pika.connect_robust(amqp_url, timeout=10)
    except aiormq.exceptions.ProbableAuthenticationError:
        user = parts.username or "guest"
        cause = f"the broker at {where} refused the user {user!r} (wrong password?)"
    except aiormq.exceptions.InvalidFrameError as e:
        if "Connection.Close" not in str(e):
            raise
        # RabbitMQ closes the connection it was opening: an unknown virtual host, or
        # one the user may not use.
        cause = (
            f"the broker at {where} refused virtual host {vhost!r} "
            "(does it exist, and may the user use it?)"
        )
    except (aiormq.exceptions.AMQPConnectionError, OSError, TimeoutError) as e:
        reason = e.__cause__ or e
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        cause = f"cannot reach the broker at {where}: {text}"
    raise SettingError("OUTDIAL_AMQP_URL", cause)
