"""The attack pass of issue 13: what a hostile client did to the service, each
tried again as it was tried then (from outside: a real `outdial run`, the real
broker and stores), each now answered as it should be.

Every test here is black-box on purpose: with `OUTDIAL_CODE_UNDER_TEST` naming
a checkout of another version, the service processes run that version's code
(the tests themselves do not change), which is how each was seen failing on
the version before this one (306e7bf; see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import json
import multiprocessing
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import aio_pika
import aiohttp
import orjson
import pytest

from shared import tokens
from shared.bus import COMMAND_QUEUE, DEAD_LETTER_QUEUE, JSON
from tests.expected import TEL
from tests.fixtures import AMQP_URL, SECRET, purge_command_queues
from tests.integration.processes import OUTDIAL, free_port

pytestmark = pytest.mark.integration

CODE_UNDER_TEST = os.environ.get("OUTDIAL_CODE_UNDER_TEST")
VHOST = AMQP_URL.rsplit("/", 1)[1] or "/"


def environment(**settings: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")}
    if CODE_UNDER_TEST:
        env["PYTHONPATH"] = CODE_UNDER_TEST
    env |= {"OUTDIAL_AMQP_URL": AMQP_URL}
    env |= {k: v for k, v in settings.items() if v is not None}
    return env


@dataclass
class Running:
    process: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def said(self) -> str:
        return self.log.read_text()


@contextlib.asynccontextmanager
async def outdial_run(
    cwd: Path, store_url: str, *, purge: bool = True, **settings: str | None
) -> AsyncIterator[Running]:
    """`outdial run` in `cwd`, until its HTTP API answers; stopped with SIGTERM."""
    if CODE_UNDER_TEST:
        await delete_command_queues()  # as that version would find them
    elif purge:
        await purge_command_queues()
    port = free_port()
    log = cwd / f"outdial-{port}.log"
    env = environment(
        OUTDIAL_DATABASE_URL=store_url,
        OUTDIAL_HTTP_PORT=str(port),
        OUTDIAL_JWT_SECRET=SECRET,
        **settings,
    )
    running = Running(_spawn(cwd, env, log), port, log)
    process = running.process
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                assert process.poll() is None, running.said()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{running.base}/healthz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"outdial run did not answer:\n{running.said()}")
        await asyncio.sleep(0.5)  # its consumers are up too
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def delete_command_queues() -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for name in (COMMAND_QUEUE, DEAD_LETTER_QUEUE):
            channel = await connection.channel()
            await channel.queue_delete(name)


def _spawn(cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as out:
        return subprocess.Popen(
            [OUTDIAL, "run"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def dead_letters_list() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OUTDIAL, "dead-letters", "list"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the peak, not the moment
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


class Bus:
    """Commands with the properties a test chooses; replies by correlation id, on a
    queue of this client or on direct reply-to."""

    async def __aenter__(self) -> Bus:
        self.connection = await aio_pika.connect(AMQP_URL)
        self.channel = await self.connection.channel()
        self.queue = await self.channel.declare_queue(exclusive=True)
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.arrived = asyncio.Event()
        await self.queue.consume(self._on_reply, no_ack=True)
        # Direct reply-to: replies come on the pseudo-queue, to this channel.
        self.direct = await self.connection.channel()
        direct = await self.direct.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await direct.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.replies.setdefault(message.correlation_id or "", []).append(orjson.loads(message.body))
        self.arrived.set()

    async def send(
        self,
        body: bytes,
        correlation_id: str,
        *,
        message_id: str | None = None,
        reply_to: str | None = "mine",
        direct: bool = False,
    ) -> None:
        channel = self.direct if direct else self.channel
        if reply_to == "mine":
            reply_to = "amq.rabbitmq.reply-to" if direct else self.queue.name
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                content_type=JSON,
                correlation_id=correlation_id,
                message_id=message_id or str(uuid.uuid4()),
                reply_to=reply_to,
            ),
            routing_key=COMMAND_QUEUE,
        )

    async def reply(self, correlation_id: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while correlation_id not in self.replies:
            self.arrived.clear()
            left = deadline - time.monotonic()
            assert left > 0, f"no reply to {correlation_id}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)
        return self.replies[correlation_id][0]


def command(type_: str, customer: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": type_, "customer_id": customer, **fields})


def create(customer: str, **fields: Any) -> bytes:
    return command("CreateOutdial", customer, **{"name": "", "detail": "", "data": "", **fields})


# ---- 1. a forged direct reply-to ----------------------------------------------

# The kind RabbitMQ 3.x cannot decode: publishing to it closes the publishing
# connection (541 INTERNAL_ERROR).
FORGED_REPLY_TO = "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAxMzU4NzI1OQAAC5gAAAAAZzF5AA==.xyz"


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_forged_reply_tos_cost_nobody_else_a_reply(store_url: str, tmp_path: Path) -> None:
    """Ten forged reply-tos a second for six seconds, while clients on direct
    reply-to, on their own queues and over HTTP write: every one of them gets its
    answer. (Before: 18-23 of 60 HTTP writes answered 504, and direct reply-to
    clients lost about half of their replies.)"""
    customer = str(uuid.uuid4())
    async with outdial_run(tmp_path, store_url) as service, Bus() as bus:
        stop = asyncio.Event()

        async def attack() -> int:
            sent = 0
            while not stop.is_set():
                await bus.send(b'{"type":"Nope"}', f"forged-{sent}", reply_to=FORGED_REPLY_TO)
                sent += 1
                await asyncio.sleep(0.1)
            return sent

        attacker = asyncio.create_task(attack())
        headers = {"Authorization": f"Bearer {tokens.mint(uuid.UUID(customer), SECRET)}"}
        statuses: list[int] = []
        async with aiohttp.ClientSession() as http:
            for i in range(60):
                await bus.send(create(customer, name=f"direct {i}"), f"direct-{i}", direct=True)
                await bus.send(create(customer, name=f"queued {i}"), f"queued-{i}")
                async with http.post(
                    f"{service.base}/v1.0/outdials",
                    json={"name": f"http {i}", "detail": "", "data": ""},
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as r:
                    statuses.append(r.status)
                await asyncio.sleep(0.1)
        stop.set()
        assert await attacker >= 50
        for i in range(60):
            assert (await bus.reply(f"direct-{i}"))["status_code"] == 200
            assert (await bus.reply(f"queued-{i}"))["status_code"] == 200
    assert statuses == [200] * 60


# ---- 2. the JWT secret ---------------------------------------------------------


def _read_secret(var_dir: str, out: Any) -> None:
    os.environ.pop("OUTDIAL_JWT_SECRET", None)
    os.environ["OUTDIAL_VAR_DIR"] = var_dir
    from shared.config import Settings

    try:
        out.put(Settings().secret)
    except Exception as e:  # the previous version's bug surfaces here, or not at all
        out.put(f"error: {e}")


def test_processes_starting_at_once_agree_on_a_whole_secret(tmp_path: Path) -> None:
    """Two processes making the secret at the same moment, 100 times: both read the
    same, whole secret. (Before: in 183 of 300 rounds one read the file between
    its creation and its writing, and got an empty secret.)"""
    context = multiprocessing.get_context("fork")
    rounds = 100
    if CODE_UNDER_TEST:  # fresh interpreters, which import that version's code
        import sys

        sys.path.insert(0, CODE_UNDER_TEST)
        context, rounds = multiprocessing.get_context("spawn"), 20
    for round_ in range(rounds):
        var_dir = tmp_path / f"round-{round_}" / "var"
        out = context.Queue()
        processes = [
            context.Process(target=_read_secret, args=(str(var_dir), out)) for _ in range(2)
        ]
        for p in processes:
            p.start()
        got = [out.get(timeout=30) for _ in processes]
        for p in processes:
            p.join()
        assert got[0] == got[1], (round_, got)
        assert len(got[0]) >= 32, (round_, got)
        assert stat.S_IMODE((var_dir / "jwt.secret").stat().st_mode) == 0o600
        assert [p.name for p in var_dir.iterdir()] == ["jwt.secret"]  # no draft left


def test_an_empty_or_short_secret_is_refused_at_start(tmp_path: Path) -> None:
    """A secret file left empty (a crash while it was written, before) or a short
    OUTDIAL_JWT_SECRET: the service does not start. (Before: it started, and with
    PyJWT 2.8 a token signed with the empty key was accepted.)"""
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "jwt.secret").write_text("")
    for settings in ({}, {"OUTDIAL_JWT_SECRET": "0123456789abcdef"}):
        env = environment(
            OUTDIAL_DATABASE_URL=f"sqlite:///{tmp_path}/s.sqlite3",
            OUTDIAL_HTTP_PORT=str(free_port()),
            **settings,
        )
        result = subprocess.run(
            [OUTDIAL, "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1, result.stderr[-2000:]
        assert "shorter than 32 bytes" in result.stderr.splitlines()[-1]


# ---- 3. ids in the clients' id space ------------------------------------------

# Where the previous version kept a command's receipt: an aggregate with this id.
OLD_RECEIPT_NAMESPACE = uuid5(NAMESPACE_URL, "urn:outdial:command-receipt")


async def test_no_id_a_client_chooses_makes_another_customers_command_fail(
    store_url: str, tmp_path: Path
) -> None:
    """Tenant X creates outdials whose ids are where V's receipts would be, for
    message_ids V will use; V's commands then succeed. (Before: each was a 500,
    retried and dead-lettered.)"""
    squatter, victim = str(uuid.uuid4()), str(uuid.uuid4())
    async with outdial_run(tmp_path, store_url), Bus() as bus:
        for i in range(3):
            taken = uuid5(OLD_RECEIPT_NAMESPACE, f"{victim}/order-{i}")
            await bus.send(create(squatter, id=str(taken)), f"squat-{i}")
            assert (await bus.reply(f"squat-{i}"))["status_code"] == 200
        for i in range(3):
            await bus.send(create(victim, name=f"mine {i}"), f"v-{i}", message_id=f"order-{i}")
            reply = await bus.reply(f"v-{i}")
            assert reply["status_code"] == 200, reply
            assert reply["data"]["customer_id"] == victim


# ---- 4. giant valid commands ----------------------------------------------------


def targets(count: int, data_bytes: int) -> list[dict[str, Any]]:
    return [
        {"name": f"t{i}", "detail": "", "data": "x" * data_bytes, "destination_0": TEL}
        for i in range(count)
    ]


async def test_a_command_over_16_mib_is_refused_unread(store_url: str, tmp_path: Path) -> None:
    """1,000 targets of 17 KiB each: 413 `command_too_large`, nothing stored.
    (Before: parsed and stored, however big; 67 MB stalled the writer 41 s.)"""
    customer = str(uuid.uuid4())
    async with outdial_run(tmp_path, store_url), Bus() as bus:
        await bus.send(create(customer), "made")
        outdial = (await bus.reply("made"))["data"]["id"]
        body = command("AddTargets", customer, outdial_id=outdial, targets=targets(1000, 17 * 1024))
        assert len(body) > 16 * 1024 * 1024
        await bus.send(body, "giant")
        reply = await bus.reply("giant", timeout=60)
        assert reply["status_code"] == 413, str(reply)[:300]
        assert reply["error"]["code"] == "command_too_large"


async def test_a_command_of_almost_16_mib_leaves_the_others_answered_and_memory_bounded(
    store_url: str, tmp_path: Path
) -> None:
    """The biggest command the service takes, while other commands arrive: they
    are answered (within the HTTP API's 10 s), and `outdial run` stays well under
    the 512 MiB a container of the command side gets. (Before: 1.5 GiB, and
    other commands waited 27 s.)"""
    customer = str(uuid.uuid4())
    async with outdial_run(tmp_path, store_url) as service, Bus() as bus:
        await bus.send(create(customer), "made")
        outdial = (await bus.reply("made"))["data"]["id"]
        body = command("AddTargets", customer, outdial_id=outdial, targets=targets(1000, 16_000))
        assert 15 * 1024 * 1024 < len(body) < 16 * 1024 * 1024
        await bus.send(body, "big")
        started = time.monotonic()
        for i in range(20):
            await bus.send(create(customer, name=f"small {i}"), f"small-{i}")
            await asyncio.sleep(0.1)
        for i in range(20):
            assert (await bus.reply(f"small-{i}", timeout=30))["status_code"] == 200
        waited = time.monotonic() - started
        assert (await bus.reply("big", timeout=60))["status_code"] == 200
        assert waited < 12, waited
        peak = rss_mib(service.process.pid)
        assert peak < 400, f"outdial run peaked at {peak:.0f} MiB"


def test_an_import_is_cut_into_commands_under_16_mib(tmp_path: Path) -> None:
    """A CSV of 1,000 rows of 20 KiB of data each (20 MB): batches of at most 16 MiB
    each, every row in one. (Before: one batch of 1,000 rows, 20 MB.)"""
    path = tmp_path / "big.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "data", "destination_0_type", "destination_0_target"])
        for i in range(1000):
            writer.writerow([f"r{i}", "y" * 20_000, "tel", "+15559876543"])
    # In a process of its own, so that it runs the code under test.
    sizes = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, uuid, orjson\n"
            "from services.importer import plan\n"
            "planned = plan(__import__('pathlib').Path(sys.argv[1]), uuid.uuid4(), uuid.uuid4())\n"
            "print(orjson.dumps([[len(b), len(orjson.dumps({'targets': b}))] "
            "for b in planned.batches]).decode())",
            str(path),
        ],
        cwd=tmp_path,  # not the checkout: `python -c` looks in its folder first
        env=environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    batches = orjson.loads(sizes)
    assert sum(rows for rows, _ in batches) == 1000
    assert all(size < 16 * 1024 * 1024 for _, size in batches), batches


# ---- 5. the dead-letter queue -------------------------------------------------


def queue_arguments(name: str) -> str:
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", VHOST, "name", "arguments"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in listed.splitlines():
        if line.split("\t")[0] == name:
            return line
    raise AssertionError(f"no queue {name} in {listed}")


async def declare_plain_dead_letter_queue(message: bytes | None) -> None:
    """As every earlier version declared it: durable, no arguments."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        with contextlib.suppress(Exception):
            await channel.queue_delete(DEAD_LETTER_QUEUE)
        channel = await connection.channel()
        await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True)
        if message is not None:
            await channel.default_exchange.publish(
                aio_pika.Message(message), routing_key=DEAD_LETTER_QUEUE
            )


async def test_the_dead_letter_queue_is_bounded_and_keeps_a_sample_of_junk(
    store_url: str, tmp_path: Path
) -> None:
    """Junk of 20 MB is parked as its first 64 KiB; the queue is declared bounded
    (length, bytes, oldest dropped). (Before: 5,000 junk messages and one of
    100 MB made 105 MB there, unbounded.)"""
    await declare_plain_dead_letter_queue(None)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(DEAD_LETTER_QUEUE)
    async with outdial_run(tmp_path, store_url), Bus() as bus:
        await bus.send(b"\x00" * (20 * 1024 * 1024), "huge-junk")
        assert (await bus.reply("huge-junk", timeout=60))["status_code"] == 413
        await bus.send(b"[" + b"1," * 100_000 + b"1]", "junk")
        assert (await bus.reply("junk"))["status_code"] == 400
    arguments = queue_arguments(DEAD_LETTER_QUEUE)
    for bound in ("x-max-length", "x-max-length-bytes", "x-overflow"):
        assert bound in arguments, arguments
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=False)
        for size in (20 * 1024 * 1024, 200_003):
            parked = await queue.get(no_ack=True, timeout=5)
            assert len(parked.body) == 64 * 1024, len(parked.body)
            assert parked.headers["x-outdial-body-bytes"] == size
            assert parked.headers["x-outdial-error"]


async def test_an_unbounded_dead_letter_queue_of_before_keeps_working(
    store_url: str, tmp_path: Path
) -> None:
    """Upgrading: an empty unbounded queue is replaced by a bounded one; one that
    holds dead letters is kept as it is (nothing lost) and the log says, in one
    line, what to run to bound it; commands are answered either way."""
    await declare_plain_dead_letter_queue(None)
    async with outdial_run(tmp_path, store_url, purge=False), Bus() as bus:
        await bus.send(create(str(uuid.uuid4())), "a")
        assert (await bus.reply("a"))["status_code"] == 200
    assert "x-max-length" in queue_arguments(DEAD_LETTER_QUEUE)

    await declare_plain_dead_letter_queue(b"an old dead letter")
    async with outdial_run(tmp_path, store_url, purge=False) as service, Bus() as bus:
        await bus.send(create(str(uuid.uuid4())), "b")
        assert (await bus.reply("b"))["status_code"] == 200
        await bus.send(b"not json", "junk")
        assert (await bus.reply("junk"))["status_code"] == 400
        log = service.said()
    assert "x-max-length" not in queue_arguments(DEAD_LETTER_QUEUE)
    advice = [line for line in log.splitlines() if "rabbitmqctl set_policy" in line]
    assert len(advice) == 1, log[-3000:]


# ---- the low ones -----------------------------------------------------------------


async def test_the_low_ones_over_http(store_url: str, tmp_path: Path) -> None:
    """CSRF, headers that name the software, missing security headers, an
    Idempotency-Key of bytes that are not UTF-8, the bind address, the store's mode."""
    customer = uuid.uuid4()
    token = tokens.mint(customer, SECRET)
    async with outdial_run(tmp_path, store_url) as service:
        async with aiohttp.ClientSession() as http:
            # A form post with the cookie is what another site's page can make a browser send.
            async with http.post(
                f"{service.base}/v1.0/outdials",
                data=b'{"name": "", "detail": "", "data": ""}',
                headers={"Content-Type": "text/plain", "Cookie": f"token={token}"},
            ) as r:
                assert r.status == 415, await r.text()
            async with http.post(
                f"{service.base}/v1.0/outdials",
                json={"name": "", "detail": "", "data": ""},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "\xff\xfe"},
            ) as r:
                assert r.status == 200, await r.text()
            async with http.get(f"{service.base}/") as r:
                assert r.status == 200
                for header in ("Content-Security-Policy", "X-Content-Type-Options"):
                    assert header in r.headers, dict(r.headers)
                assert r.headers["X-Frame-Options"] == "DENY"
                assert r.headers["Referrer-Policy"] == "no-referrer"
                assert not re.search(r"aiohttp|Python", r.headers.get("Server", ""))
        assert listening_addresses(service.port) == {"127.0.0.1"}
    if store_url.startswith("sqlite"):
        assert file_mode(Path(store_url.removeprefix("sqlite:///"))) == 0o600


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses listening on `port`, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


async def test_a_message_id_reused_on_another_command_is_refused(
    store_url: str, tmp_path: Path
) -> None:
    customer = str(uuid.uuid4())
    async with outdial_run(tmp_path, store_url), Bus() as bus:
        await bus.send(create(customer, name="first"), "one", message_id="same-key")
        first = await bus.reply("one")
        assert first["status_code"] == 200
        await bus.send(create(customer, name="other"), "two", message_id="same-key")
        second = await bus.reply("two")
        assert second["status_code"] == 409, second
        assert second["error"]["code"] == "idempotency_key_reused"
        await bus.send(create(customer, name="first"), "three", message_id="same-key")
        assert await bus.reply("three") == first  # the same command: its first reply
        # The same fields in another order, spaced, with a key the service does not
        # know: still the same command (CONTRACT 3 compares types and fields).
        fields = orjson.loads(create(customer, name="first"))
        respelled = json.dumps({"x-unknown": 1, **dict(reversed(fields.items()))}, indent=2)
        await bus.send(respelled.encode(), "four", message_id="same-key")
        assert await bus.reply("four") == first


async def test_dead_letters_list_prints_no_terminal_escapes(store_url: str, tmp_path: Path) -> None:
    customer = "\x1b]0;pwned\x07\x1b[31m"
    async with outdial_run(tmp_path, store_url), Bus() as bus:
        await bus.send(orjson.dumps({"type": "\x1b[2J", "customer_id": customer}), "escape")
        assert (await bus.reply("escape"))["status_code"] == 400
    listed = await asyncio.to_thread(dead_letters_list)
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert "\\x1b" in listed.stdout
    base64.b64encode(listed.stdout.encode())  # printable, whatever it says
