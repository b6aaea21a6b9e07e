"""Hostile input on `outdial.commands`: the real `outdial command` process against
thousands of generated messages, and a customer probing another's resources.

Each message is one of three kinds, known by construction (not by asking the
service's own parser):
- valid: a command of CONTRACT 3 built from the schemas in shared/commands.py,
  unknown keys added at times; answered 200, 404 or 409, never dead-lettered;
- invalid: a valid command with one field made surely wrong (missing, wrong type,
  too long, bad UUID, bad destination, out of range); answered 400
  `invalid_command` with details, not dead-lettered;
- junk: not JSON, not UTF-8, not an object, no known `type`, nested past any
  parser's depth; answered 400 and dead-lettered (a big one as a sample of its
  first 64 KiB, with its size).
Whatever its kind, a message over 16 MiB is answered 413 `command_too_large`
unread, and not dead-lettered. Every kind is also sent without `reply_to`,
`message_id` (aiormq then makes one up) or `content_type`.
Each message gets exactly one reply, never a 500; the consumer goes on serving
and its resident memory stays bounded.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from services.command.consumer import MAX_KEPT_JUNK
from services.query.schema import OUTDIALS, TARGETS, table
from services.store import read_transaction
from shared.bus import COMMAND_QUEUE
from shared.commands import (
    COMMAND_TYPES,
    MAX_COMMAND_BYTES,
    MAX_TARGETS_PER_COMMAND,
    MAX_TRY_COUNT,
    AddTargets,
    Command,
    TargetFields,
)
from tests.fixtures import CommandSide, command_side, purge_command_queues
from tests.integration.processes import OUTDIAL
from tests.reliability.rpc import (
    BackgroundLoop,
    Outgoing,
    Replies,
    queue_depth,
    take_dead_letters,
)

pytestmark = pytest.mark.integration

MODELS: dict[str, Any] = {
    model.__name__: model
    for model in Command.__origin__.__args__  # type: ignore[attr-defined]
}
FIELD_NAMES = {name for model in MODELS.values() for name in model.model_fields}
# Messages per hypothesis example: a list of this many is one example.
BATCH = 25
# Resident memory the consumer may grow by over a run (generous: it is a bound on
# leaks, not a measurement of need).
RSS_SLACK_KIB = 100 * 1024
# The stream's first quarter is its warm-up: its first few hundred messages raise the
# consumer's resident memory once, by 45-120 MiB (measured: flat from the 500th to the
# 6,000th message at --reliability-scale 3), and the bound above was sometimes just
# crossed there. After it, the stream must not grow with its length: a leak of a
# few KiB a message shows over the other three quarters.
STREAM_WARM_UP_KIB = 160 * 1024
STREAM_GROWTH_KIB = 25 * 1024


def dumps(value: Any) -> bytes:
    """JSON as a sender may write it: integers of any size (orjson stops at 64 bits)."""
    return json.dumps(value, ensure_ascii=False).encode()


# --- valid values, per field of the schemas ---------------------------------------

TEL_0 = {"type": "tel", "target": "+15559876543"}
TEL = ["+15559876543", "+442071838750", "+819012345678", "+4930123456", "+8613800138000"]
SIP = ["alice@example.com", "1001@10.0.0.1", "bob@sip.example.org:5060"]
EMAIL = ["someone@example.com", "a.b+c@example.co.uk"]
UUID_TYPES = ["agent", "conference", "extension", "line", "web_session"]

uuid_text = st.uuids().map(str)
# Any Unicode, NUL, emoji and right-to-left marks included; hypothesis leans to edges.
short_text = st.text(max_size=8)


def rarely(usual: st.SearchStrategy[Any], rare: Any) -> st.SearchStrategy[Any]:
    """`rare` one draw in twenty: big values, without making every message big."""
    return st.integers(0, 19).flatmap(lambda n: st.just(rare) if n == 0 else usual)


def text_up_to(limit: int) -> st.SearchStrategy[str]:
    return rarely(short_text, "é" * limit)  # at the limit, in characters not bytes


address = st.one_of(
    *[
        st.fixed_dictionaries(
            {"type": st.just(kind), "target": targets},
            optional={"target_name": short_text, "name": short_text, "detail": short_text},
        )
        for kind, targets in [
            ("tel", st.sampled_from(TEL)),
            ("sip", st.sampled_from(SIP)),
            ("email", st.sampled_from(EMAIL)),
            *[(kind, uuid_text) for kind in UUID_TYPES],
        ]
    ]
)
max_try_count = st.one_of(st.integers(0, 5), st.integers(0, MAX_TRY_COUNT))

VALID: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(st.none(), uuid_text),
    "campaign_id": uuid_text,
    "name": text_up_to(1024),
    "detail": text_up_to(1024),
    "data": text_up_to(65536),
    **{f"destination_{i}": st.one_of(st.none(), address) for i in range(5)},
    **{f"max_try_count_{i}": max_try_count for i in range(5)},
    "try_interval_ms": st.integers(0, 365 * 24 * 3600 * 1000),
    "destination_index": st.integers(0, 4),
    "status": st.sampled_from(["idle", "done"]),
}
# Chosen from the pool of resources that exist, so that valid commands are often 200.
POOLED = {"customer_id", "outdial_id", "target_id"}


def with_a_destination(fields: dict[str, Any], destination: dict[str, Any]) -> dict[str, Any]:
    """A target needs one destination: give it one where the draw left none."""
    if not any(fields.get(f"destination_{i}") for i in range(5)):
        fields["destination_0"] = destination
    return fields


@cache
def target_fields() -> st.SearchStrategy[dict[str, Any]]:
    return fields_of(TargetFields).flatmap(
        lambda fields: address.map(lambda d: with_a_destination(fields, d))
    )


@cache  # strategies are made once: making them anew for every draw costs more than the draw
def fields_of(model: Any) -> st.SearchStrategy[dict[str, Any]]:
    """The model's non-pooled fields: required ones always, optional ones at times."""
    required, optional = {}, {}
    for name, info in model.model_fields.items():
        if name in POOLED or name in ("type", "targets"):
            continue
        (required if info.is_required() else optional)[name] = VALID[name]
    return st.fixed_dictionaries(required, optional=optional)


def unique_ids(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    for t in targets:
        if t.get("id") is not None and t["id"] in seen:
            t["id"] = None
        seen.add(t.get("id") or "")
    return targets


@dataclass(eq=False)  # hashable, for the strategies made from it once (`cache`)
class Pool:
    """Resources that exist, so that valid commands find something."""

    outdials: dict[str, list[str]] = field(default_factory=dict)  # by customer
    targets: dict[str, list[str]] = field(default_factory=dict)  # by outdial

    @property
    def customers(self) -> list[str]:
        return list(self.outdials)

    def all_outdials(self) -> list[str]:
        return [o for outdials in self.outdials.values() for o in outdials]


@cache
def one_of_or_none_such(ids: tuple[str, ...]) -> st.SearchStrategy[str]:
    """One of these ids, or one that exists nowhere."""
    return st.one_of(st.sampled_from(ids), uuid_text)


@cache
@st.composite
def valid_command(draw: st.DrawFn, pool: Pool) -> dict[str, Any]:
    type_ = draw(command_type)
    model = MODELS[type_]
    customer = draw(one_of_or_none_such(tuple(pool.customers)))
    # Mostly the customer's own outdials, so that valid commands are often applied.
    mine = pool.outdials.get(customer) if draw(st.booleans()) else None
    outdial = draw(one_of_or_none_such(tuple(mine or pool.all_outdials())))
    targets = tuple(pool.targets.get(outdial) or [str(uuid.uuid4())])
    pooled = {
        "customer_id": customer,
        "outdial_id": outdial,
        "target_id": draw(one_of_or_none_such(targets)),
    }
    command = {"type": type_}
    command.update({k: v for k, v in pooled.items() if k in model.model_fields})
    command.update(draw(fields_of(model)))
    if model is AddTargets:
        command["targets"] = unique_ids(draw(some_targets))
    elif "destination_0" in model.model_fields:
        command = with_a_destination(command, draw(address))
    if draw(st.integers(0, 9)) == 0:  # keys the schema does not know are ignored
        command.update(draw(unknown_keys))
    return command


command_type = st.sampled_from(COMMAND_TYPES)
some_targets = st.lists(target_fields(), min_size=1, max_size=3)


json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | short_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=8,
)
unknown_keys = st.dictionaries(
    rarely(
        st.sampled_from(["__proto__", "constructor", "prototype", "$where", "Type"]), "x" * 100_000
    )
    | short_text.filter(lambda k: k not in FIELD_NAMES),
    json_value,
    min_size=1,
    max_size=2,
)

# --- surely invalid values, per field ---------------------------------------------

# No infinity: json.dumps writes it `Infinity`, which is not JSON, so the message
# would be junk (dead-lettered), not an invalid command (a CI run drew one).
not_a_string = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(short_text, max_size=2),
)
bad_uuid = st.one_of(
    rarely(
        st.sampled_from(["", "not-a-uuid", "5e4a0680-804e-11ec-8477-2fea5968d85"]), "x" * 100_000
    ),
    st.integers(),
    st.lists(uuid_text, max_size=1),
)


def too_long(limit: int) -> st.SearchStrategy[str]:
    return rarely(st.just("x" * (limit + 1)), "x" * 100_000)


bad_address = st.sampled_from(
    [
        {},
        "tel:+15559876543",
        ["tel", "+15559876543"],
        5,
        {"type": "tel"},
        {"type": "tel", "target": ""},
        {"type": "tel", "target": "+1 555 987 6543"},
        {"type": "tel", "target": "15559876543"},
        {"type": "tel", "target": "+15559876543x"},
        {"type": "tel", "target": "+1555987654321234567"},
        {"type": "fax", "target": "+15559876543"},
        {"type": "sip", "target": "no-at-sign"},
        {"type": "sip", "target": "a@b:70000"},
        {"type": "email", "target": "not-an-email"},
        {"type": "agent", "target": "not-a-uuid"},
        # A LINE user id is LINE's own text (shared/addresses.py), not a UUID: any
        # text of 1 to 1,024 characters is one, so only none or too much is wrong.
        {"type": "line", "target": ""},
        {"type": "webchat", "target": "x" * 1025},
        {"type": "tel", "target": "+15559876543", "name": "x" * 1025},
        {"type": "tel", "target": 15559876543},
    ]
)
bad_count = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=MAX_TRY_COUNT + 1),  # 2**64 and past once sent SQLite overflowing
    st.sampled_from(["3", 1.5, True, None, [], {}]),
)
INVALID: dict[str, st.SearchStrategy[Any]] = {
    "customer_id": bad_uuid | st.none(),
    "outdial_id": bad_uuid | st.none(),
    "target_id": bad_uuid | st.none(),
    "campaign_id": bad_uuid | st.none(),
    "id": bad_uuid,  # null is a valid id: "none given"
    "name": not_a_string | st.none() | too_long(1024),
    "detail": not_a_string | st.none() | too_long(1024),
    "data": not_a_string | st.none() | too_long(65536),
    **{f"destination_{i}": bad_address for i in range(5)},
    **{f"max_try_count_{i}": bad_count for i in range(5)},
    # Not bad_count: a count past MAX_TRY_COUNT is a fine interval (up to a year).
    "try_interval_ms": st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=365 * 24 * 3600 * 1000 + 1),
        st.sampled_from(["3", 1.5, True, None, [], {}]),
    ),
    "destination_index": st.one_of(
        st.integers(max_value=-1), st.integers(min_value=5), st.sampled_from(["0", None, 0.5])
    ),
    "status": st.sampled_from(["progressing", "IDLE", "", None, 1, ["done"]]),
    "targets": st.sampled_from([[], "targets", None, [{}], [5], {"0": {}}]),
}


@cache
def field_of(model: Any) -> st.SearchStrategy[str]:
    return st.sampled_from(sorted(set(model.model_fields) - {"type"}))


@cache
@st.composite
def invalid_command(draw: st.DrawFn, pool: Pool) -> dict[str, Any]:
    command = draw(valid_command(pool))
    model = MODELS[command["type"]]
    name = draw(field_of(model))
    if model.model_fields[name].is_required() and draw(st.booleans()):
        command.pop(name, None)
    elif name == "targets" and draw(st.booleans()):
        # One target too many, or one bad target among good ones: all or none.
        good = {**draw(target_fields()), "id": None}
        if draw(st.booleans()):
            command["targets"] = [good] * (MAX_TARGETS_PER_COMMAND + 1)
        else:
            command["targets"] = [good, {**good, "destination_0": draw(bad_address)}, good]
    else:
        command[name] = draw(INVALID[name])
    return command


# --- junk: nothing the consumer can read a command from -----------------------------


def nested(depth: int, opening: bytes, closing: bytes) -> bytes:
    return opening * depth + closing * depth


junk_body = st.one_of(
    st.binary(max_size=64),
    json_value.filter(lambda v: not isinstance(v, dict)).map(dumps),
    st.dictionaries(short_text.filter(lambda k: k != "type"), json_value, max_size=3).map(dumps),
    st.sampled_from(
        [
            5,
            None,
            [],
            {},
            "createoutdial",
            "CreateOutdial ",
            "Create\x00Outdial",
            "DeleteEverything",
            "x" * 100_000,
        ]
    ).map(lambda t: dumps({"type": t, "customer_id": str(uuid.uuid4()), "name": "n"})),
    st.sampled_from([300, 1_000, 10_000]).flatmap(
        lambda depth: st.sampled_from(
            [
                nested(depth, b"[", b"]"),
                b'{"a":' * depth + b"1" + b"}" * depth,
            ]
        )
    ),
)


not_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])
too_deep = st.sampled_from([300, 5_000])  # the parser stops at about 250


@cache
@st.composite
def junk(draw: st.DrawFn, pool: Pool) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:  # a valid command made not UTF-8, or nested past the parser's depth
        body = dumps(draw(valid_command(pool)))
        if draw(st.booleans()):
            cut = draw(st.integers(1, len(body) - 1))
            return body[:cut] + draw(not_utf8) + body[cut:]
        return body[:-1] + b',"deep":' + nested(draw(too_deep), b"[", b"]") + b"}"
    if choice == 1:  # a command wrapped, as some senders do
        return dumps({"command": draw(valid_command(pool))})
    return draw(junk_body)


# --- one message, with its properties ------------------------------------------------


kinds = st.sampled_from(["valid", "valid", "invalid", "junk"])
content_types = st.sampled_from(["application/json", None, "text/plain", "x/\x7f"])
# One big header at most (the frame that carries them is 128 KiB), and rarely.
headers = st.fixed_dictionaries(
    {},
    optional={
        "x-trace": st.one_of(st.integers(-(2**63), 2**63 - 1), short_text),
        "__proto__": short_text,
        "x-big": rarely(short_text, "h" * 100_000),
    },
)


@cache
@st.composite
def message(draw: st.DrawFn, pool: Pool) -> tuple[str, bytes, dict[str, Any]]:
    kind = draw(kinds)
    if kind == "junk":
        body = draw(junk(pool))
    else:
        body = dumps(draw((valid_command if kind == "valid" else invalid_command)(pool)))
    properties = {
        "reply": draw(st.integers(0, 9)) > 0,
        "message_id": draw(st.integers(0, 9)) > 0,
        "content_type": draw(content_types),
        "headers": draw(headers),
    }
    return kind, body, properties


class Batch(list[tuple[str, bytes, dict[str, Any]]]):
    """A hypothesis example: its repr (printed on failure) stays short."""

    def __repr__(self) -> str:
        return f"Batch of {len(self)} (the failing message is in the assertion)"


# --- the run -------------------------------------------------------------------------


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB, from /proc/<pid>/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


@pytest.fixture
def command_process(
    store_url: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The real `outdial command` on an empty store, its log in a file (a pipe
    nobody read would fill up and block it)."""
    asyncio.run(purge_command_queues())
    log_path = tmp_path / "command.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [OUTDIAL, "command"],
            cwd=tmp_path,
            env={**os.environ, "OUTDIAL_DATABASE_URL": store_url},
            stdout=log_file,
            stderr=log_file,
        )
        try:
            deadline = time.monotonic() + 30
            while b'"msg":"ready"' not in log_path.read_bytes():
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
            yield process, log_path
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def make_pool(replies: Replies, customers: int = 3, outdials: int = 3) -> Pool:
    pool = Pool()
    for c in range(customers):
        customer = str(uuid.uuid4())
        pool.outdials[customer] = []
        for o in range(outdials):
            r = await replies.send(
                {
                    "type": "CreateOutdial",
                    "customer_id": customer,
                    "name": f"pool {c}.{o}",
                    "detail": "",
                    "data": "",
                },
                f"pool-{c}-{o}",
            )
            assert r["status_code"] == 200, r
            outdial = r["data"]["id"]
            pool.outdials[customer].append(outdial)
            r = await replies.send(
                {
                    "type": "AddTargets",
                    "customer_id": customer,
                    "outdial_id": outdial,
                    "targets": [
                        {
                            "name": f"t{i}",
                            "detail": "",
                            "data": "",
                            "destination_0": {"type": "tel", "target": TEL[0]},
                        }
                        for i in range(2)
                    ],
                },
                f"pool-{c}-{o}-targets",
            )
            assert r["status_code"] == 200, r
            pool.targets[outdial] = [t["id"] for t in r["data"]["result"]]
    return pool


NOT_FOUND = {"outdial_not_found", "target_not_found", "no_available_target"}
CONFLICTS = {
    "target_progressing",
    "target_done",
    "destination_absent",
    "outdial_exists",
    "target_exists",
    "target_not_progressing",
}


def check_reply(kind: str, body: bytes, reply: dict[str, Any]) -> None:
    status = reply.get("status_code")
    what = (kind, len(body), body[:300], reply)
    if len(body) > MAX_COMMAND_BYTES:  # refused unread, whatever it holds
        assert status == 413, what
        assert reply["error"]["code"] == "command_too_large", what
        return
    if kind == "valid":
        assert status in (200, 404, 409), what
        if status == 200:
            assert isinstance(reply["data"], dict) and isinstance(reply["position"], int), what
        else:
            assert reply["error"]["code"] in (NOT_FOUND if status == 404 else CONFLICTS), what
    else:
        assert status == 400, what
        assert reply["error"]["code"] == "invalid_command", what
        if kind == "invalid":
            assert reply["error"]["details"], what


def heavy_messages(pool: Pool) -> list[tuple[str, bytes, dict[str, Any]]]:
    """The large ones, once each: a 10 MB body, 100,000-character values."""
    customer = pool.customers[0]
    outdial = pool.outdials[customer][0]
    base = {"type": "CreateOutdial", "customer_id": customer, "name": "n", "detail": "", "data": ""}
    plain = {"reply": True, "message_id": True, "content_type": "application/json", "headers": {}}
    return [
        ("invalid", dumps({**base, "data": "x" * 10_000_000}), plain),
        ("junk", b"[" * 5_000_000 + b"]" * 5_000_000, plain),
        ("invalid", dumps({**base, "name": "x" * 100_000}), plain),
        ("valid", dumps({**base, "x" * 100_000: "y" * 100_000}), plain),
        (
            "junk",
            dumps({**base, "type": "x" * 100_000}),
            {**plain, "headers": {"h": "h" * 100_000}},
        ),
        (
            "invalid",
            dumps(
                {
                    "type": "AddTargets",
                    "customer_id": customer,
                    "outdial_id": outdial,
                    "targets": [
                        {
                            "name": "x" * 2000,
                            "detail": "",
                            "data": "",
                            "destination_0": {"type": "tel", "target": "+1 555"},
                        }
                    ]
                    * 1000,
                }
            ),
            plain,
        ),
    ]


def test_hostile_messages_are_answered_and_serving_goes_on(
    command_process: tuple[subprocess.Popen[bytes], Path], store_url: str, scale: int
) -> None:
    process, log_path = command_process
    # At scale 1, what keeps the reliability suite within six minutes on two cores.
    total = (2_000 if store_url.startswith("sqlite") else 1_000) * scale
    run = uuid.uuid4().hex[:8]
    sent: dict[str, tuple[str, bytes, dict[str, Any]]] = {}
    started = time.monotonic()

    with BackgroundLoop.running() as background:
        replies = Replies()
        background.run(replies.__aenter__())
        try:
            pool = background.run(make_pool(replies))
            # Warm up before measuring: the first commands import and cache.
            for i in range(20):
                customer = pool.customers[i % len(pool.customers)]
                background.run(
                    replies.send(
                        {
                            "type": "UpdateOutdialData",
                            "customer_id": customer,
                            "outdial_id": pool.outdials[customer][0],
                            "data": f"warm {i}",
                        },
                        f"warm-{i}",
                    )
                )
            rss_before, _ = rss_kib(process.pid)

            def publish(batch: list[tuple[str, bytes, dict[str, Any]]]) -> None:
                outgoing = []
                for kind, body, props in batch:
                    n = str(len(sent))
                    sent[n] = (kind, body, props)
                    outgoing.append(
                        Outgoing(
                            body,
                            correlation_id=n,
                            message_id=f"hostile-{run}-{n}" if props["message_id"] else None,
                            reply=props["reply"],
                            content_type=props["content_type"],
                            headers=props["headers"],
                        )
                    )
                background.run(replies.publish_all(outgoing))
                answered = [o.correlation_id for o in outgoing if o.reply]
                background.run(replies.wait_for(answered))
                for cid in answered:
                    kind, body, _ = sent[cid]
                    check_reply(kind, body, replies.one(cid))

            # The big messages first: their one-off cost (a 10 MB body parsed) is
            # measured apart from the stream's, which must not grow with its length.
            publish(heavy_messages(pool))
            rss_heavy, _ = rss_kib(process.pid)
            stream_start = len(sent)
            rss_warm: int | None = None

            @settings(
                max_examples=math.ceil(total / BATCH),
                deadline=None,
                database=None,
                # No shrinking: a failure names its message and reply, and shrinking
                # batches of thousands of bytes runs for minutes.
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[
                    HealthCheck.too_slow,
                    HealthCheck.data_too_large,
                    HealthCheck.large_base_example,
                ],
            )
            @given(st.lists(message(pool), min_size=BATCH, max_size=BATCH).map(Batch))
            def answered_as_their_kind(batch: list[tuple[str, bytes, dict[str, Any]]]) -> None:
                nonlocal rss_warm
                publish(batch)
                if rss_warm is None and len(sent) - stream_start >= total // 4:
                    rss_warm, _ = rss_kib(process.pid)

            answered_as_their_kind()

            # Still serving: a valid command at the end is answered 200.
            customer = pool.customers[0]
            last = background.run(
                replies.send(
                    {
                        "type": "CreateOutdial",
                        "customer_id": customer,
                        "name": "after the storm",
                        "detail": "",
                        "data": "",
                    },
                    "last",
                )
            )
            assert last["status_code"] == 200, last
            rss_after, rss_peak = rss_kib(process.pid)

            # Every junk message and every message refused unread for its size (of
            # any kind: an invalid AddTargets of 1,001 long targets once passed 16 MiB,
            # and was rightly parked while this expected only junk), with reply_to or
            # without, and nothing else, is dead-lettered.
            too_large = {c for c, (_, body, _) in sent.items() if len(body) > MAX_COMMAND_BYTES}
            junk_ids = {c for c, (kind, _, _) in sent.items() if kind == "junk"} | too_large
            dead = background.run(take_dead_letters(len(junk_ids)))
            dead_ids = Counter(m.correlation_id for m in dead)
            unexpected = [sent[c][:2] for c in set(dead_ids) - junk_ids]
            missing = [sent[c][1][:200] for c in junk_ids - set(dead_ids)]
            assert not unexpected, unexpected[:5]
            assert not missing, missing[:5]
            assert max(dead_ids.values()) == 1
            for m in dead:
                cid = m.correlation_id or ""
                body = sent[cid][1]
                assert m.body == body[:MAX_KEPT_JUNK]
                if len(body) > MAX_KEPT_JUNK:
                    assert m.headers["x-outdial-body-bytes"] == len(body)
                error = "CommandTooLarge" if cid in too_large else "InvalidCommand"
                assert m.headers["x-outdial-error-type"] == error
            # Exactly one reply each: none late, none twice, none to the unasked.
            asked = {cid for cid, (_, _, props) in sent.items() if props["reply"]}
            assert {c for c in replies.arrived if c.isdigit()} == asked
            assert all(len(replies.arrived[c]) == 1 for c in asked)
            assert background.run(queue_depth(COMMAND_QUEUE)) == 0
        finally:
            background.run(replies.__aexit__())

    assert process.poll() is None, "the consumer died"
    lines = [
        orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.startswith(b"{")
    ]
    outcomes = Counter(str(line.get("outcome")) for line in lines if line.get("msg") == "command")
    errors = [line for line in lines if line.get("level") in ("error", "critical")]
    assert errors == [], errors[:3]
    assert "500" not in outcomes
    kinds = Counter(kind for kind, _, _ in sent.values())
    assert len(sent) >= total
    # Valid commands that found their resources were applied, not only refused.
    assert int(outcomes["200"]) > kinds["valid"] // 10, outcomes
    assert rss_heavy - rss_before < RSS_SLACK_KIB, (rss_before, rss_heavy)
    assert rss_warm is not None
    assert rss_warm - rss_heavy < STREAM_WARM_UP_KIB, (rss_heavy, rss_warm)
    assert rss_after - rss_warm < STREAM_GROWTH_KIB, (rss_warm, rss_after)
    print(
        f"\nhostile ({store_url.split(':')[0]}): {len(sent)} messages {dict(kinds)}, "
        f"outcomes {dict(outcomes)}, {len(junk_ids)} dead-lettered, "
        f"RSS {rss_before // 1024} MiB, after the big ones {rss_heavy // 1024} MiB, "
        f"after a quarter of the stream {rss_warm // 1024} MiB, "
        f"at the end {rss_after // 1024} MiB (peak {rss_peak // 1024} MiB), "
        f"{time.monotonic() - started:.1f} s"
    )


# --- one customer about another's resources -------------------------------------------


def command_for(type_: str, customer: str, outdial: str, target: str) -> dict[str, Any]:
    """A valid command of this type, about this outdial and target."""
    destination = {"type": "tel", "target": TEL[0]}
    fields: dict[str, Any] = {
        "outdial_id": outdial,
        "target_id": target,
        "name": "stranger",
        "detail": "stranger",
        "data": "stranger",
        "campaign_id": str(uuid.uuid4()),
        "destination_0": destination,
        "targets": [{"name": "s", "detail": "", "data": "", "destination_0": destination}],
        "destination_index": 0,
        "status": "done",
        **{f"max_try_count_{i}": 5 for i in range(5)},
    }
    model = MODELS[type_]
    return {
        "type": type_,
        "customer_id": customer,
        **{k: v for k, v in fields.items() if k in model.model_fields},
    }


async def send(client: Replies, command: dict[str, Any], message_id: str = "") -> dict[str, Any]:
    cid = str(uuid.uuid4())
    return await client.send(command, cid, message_id=message_id or cid)


async def test_another_customers_resources_answer_404_and_show_nothing(
    service: CommandSide,
) -> None:
    """Every command that names an outdial or a target, sent by a stranger about the
    owner's: 404, not a byte of the owner's, nothing changed. Also with the owner's
    outdial and the stranger's own target, and the stranger's outdial and the
    owner's target; and the owner's message_id reused by the stranger."""
    owner, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    secret = f"secret-{uuid.uuid4().hex}"
    campaign = str(uuid.uuid4())
    async with Replies() as owners, Replies() as strangers:
        made = await send(
            owners,
            {
                "type": "CreateOutdial",
                "customer_id": owner,
                "name": secret,
                "detail": secret,
                "data": secret,
                "campaign_id": campaign,
            },
            message_id="owner-1",
        )
        outdial = made["data"]["id"]
        targets = []
        for _ in range(2):
            r = await send(
                owners,
                {
                    "type": "AddTarget",
                    "customer_id": owner,
                    "outdial_id": outdial,
                    "name": secret,
                    "detail": secret,
                    "data": secret,
                    "destination_0": {"type": "tel", "target": TEL[1], "name": secret},
                },
            )
            targets.append(r["data"]["id"])
        # One target in progress, one idle: neither state's own rule may answer first.
        r = await send(owners, command_for("MarkTargetProgressing", owner, outdial, targets[1]))
        assert r["status_code"] == 200, r
        mine = (await send(strangers, command_for("CreateOutdial", stranger, "", "")))["data"]["id"]
        my_target = (await send(strangers, command_for("AddTarget", stranger, mine, "")))["data"][
            "id"
        ]
        versions = {
            a: service.app.repository.get(uuid.UUID(a)).version for a in [outdial, *targets]
        }

        about = [t for t in COMMAND_TYPES if "outdial_id" in MODELS[t].model_fields]
        assert len(about) == len(COMMAND_TYPES) - 1  # every command but CreateOutdial
        tried: Counter[str] = Counter()
        for type_ in about:
            cases = [(outdial, t) for t in [*targets, my_target]]
            if "target_id" in MODELS[type_].model_fields:
                cases += [(mine, t) for t in targets]
            for o, t in cases:
                r = await send(strangers, command_for(type_, stranger, o, t))
                code = "outdial_not_found" if o == outdial else "target_not_found"
                assert r["status_code"] == 404, (type_, o, t, r)
                assert r["error"]["code"] == code, (type_, r)
                assert "data" not in r
                tried[type_] += 1
        # The owner's message_id from the stranger is the stranger's own command.
        r = await send(strangers, command_for("CreateOutdial", stranger, "", ""), "owner-1")
        assert r["status_code"] == 200 and r["data"]["id"] != outdial, r
        assert r["data"]["customer_id"] == stranger

        # Not a byte of the owner's in anything the stranger got: ids the stranger
        # named itself aside, not the owner's customer id, campaign, names or data.
        got = b"".join(a.body for arrived in strangers.arrived.values() for a in arrived)
        for owned in [secret, owner, campaign]:
            assert owned.encode() not in got
    assert {a: service.app.repository.get(uuid.UUID(a)).version for a in versions} == versions
    assert set(tried) == set(about)
    assert sum(tried.values()) >= 30


# --- properties the broker itself chokes on ----------------------------------------

# A direct reply-to name as RabbitMQ makes them, but of no channel: publishing to it
# makes the broker close the publishing connection (541 INTERNAL_ERROR, RabbitMQ 3.10).
FORGED_REPLY_TO = "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAxMzU4NzI1OQAAC5gAAAAAZzF5AA==.xyz"


async def test_a_forged_reply_to_or_huge_headers_do_not_stop_the_consumer(
    service: CommandSide,
) -> None:
    """Two messages that once kept the consumer from ever finishing: a reply_to that
    breaks the connection the reply goes out on (the consumer's own, then: its
    deliveries were requeued and came back, forever), and headers that fit in a
    frame only without the dead letter's own (the dead-letter publish broke the
    connection, likewise). Each is handled once; commands around them are answered."""
    customer = str(uuid.uuid4())

    def create(name: str) -> bytes:
        return dumps(
            {
                "type": "CreateOutdial",
                "customer_id": customer,
                "name": name,
                "detail": "",
                "data": "",
            }
        )

    async with Replies() as replies:
        await replies.publish_all(
            [
                *[
                    Outgoing(
                        create(f"forged {i}"),
                        f"forged-{i}",
                        message_id=f"forged-{i}",
                        reply_to=FORGED_REPLY_TO,
                    )
                    for i in range(3)
                ],
                Outgoing(b"[]", "huge", message_id="huge", headers={"h": "h" * 130_800}),
                *[
                    Outgoing(create(f"plain {i}"), f"plain-{i}", message_id=f"plain-{i}")
                    for i in range(20)
                ],
            ]
        )
        await replies.wait_for([f"plain-{i}" for i in range(20)] + ["huge"])
        assert all(replies.one(f"plain-{i}")["status_code"] == 200 for i in range(20))
        assert replies.one("huge")["status_code"] == 400
        # Applied once each, and not coming back: resent (the same bytes, under the
        # same message_id), they answer from their receipts.
        again = [
            Outgoing(create(f"forged {i}"), f"forged-{i}-again", message_id=f"forged-{i}")
            for i in range(3)
        ]
        await replies.publish_all(again)
        await replies.wait_for([o.correlation_id for o in again])
        for i, o in enumerate(again):
            r = replies.one(o.correlation_id)
            assert (r["status_code"], r["data"]["name"]) == (200, f"forged {i}"), r
    names = Counter(
        o.name
        for o in (
            service.app.repository.get(n.originator_id)
            for n in service.app.recorder.select_notifications(start=None, limit=10**9)
        )
        if getattr(o, "name", "").startswith(("forged", "plain"))
    )
    assert names == Counter(
        {**{f"forged {i}": 1 for i in range(3)}, **{f"plain {i}": 1 for i in range(20)}}
    )
    assert await queue_depth(COMMAND_QUEUE) == 0
    [dead] = await take_dead_letters(1, timeout=10)
    assert dead.correlation_id == "huge"
    assert dead.headers["x-outdial-headers-dropped"]
    assert "h" not in dead.headers


async def test_a_valid_command_of_megabytes_is_stored(store_url: str) -> None:
    """100 targets of 64 KiB of data each: 6.5 MB of events in one insert, which
    once deadlocked the writer for good in psycopg's pipeline on PostgreSQL. (Its
    own consumer, stopped with a deadline: a hung writer would hang the stop.)"""
    side = command_side(store_url, prefetch=8)
    await side.__aenter__()
    customer = str(uuid.uuid4())
    try:
        async with Replies() as replies:
            made = await replies.send(command_for("CreateOutdial", customer, "", ""), "outdial")
            big = {"name": "big", "detail": "", "data": "x" * 65536, "destination_0": TEL_0}
            many = {
                "type": "AddTargets",
                "customer_id": customer,
                "outdial_id": made["data"]["id"],
                "targets": [big] * 100,
            }
            await replies.publish(Outgoing(dumps(many), "many", message_id="many"))
            await replies.wait_for(["many"], timeout=60)
            reply = replies.one("many")
            assert reply["status_code"] == 200
            assert [t["data"] for t in reply["data"]["result"]] == ["x" * 65536] * 100
            # And the consumer goes on.
            after = await replies.send(command_for("CreateOutdial", customer, "", ""), "after")
            assert after["status_code"] == 200
    finally:
        await asyncio.wait_for(side.__aexit__(None, None, None), 30)


# --- any character a JSON string can carry --------------------------------------------


async def test_text_with_nul_and_other_control_characters_is_stored_as_sent(
    service: CommandSide,
) -> None:
    """The generated messages above draw such text only now and then; these are
    sent every time. A valid command is answered 200 whatever characters its
    strings hold, and reads back as sent. (PostgreSQL's TEXT cannot hold a NUL:
    an outdial's name kept raw in a column of the read model once failed its
    command there, 500 and dead-lettered.)"""
    customer = str(uuid.uuid4())
    odd = "a\x00b\x01\x1f\x7f\u2028\U0001f600"
    async with Replies() as replies:
        made = await send(
            replies,
            {
                "type": "CreateOutdial",
                "customer_id": customer,
                "name": odd,
                "detail": odd,
                "data": odd,
            },
        )
        assert made["status_code"] == 200, made
        outdial = made["data"]["id"]
        added = await send(
            replies,
            {
                "type": "AddTarget",
                "customer_id": customer,
                "outdial_id": outdial,
                "name": odd,
                "detail": odd,
                "data": odd,
                "destination_0": {**TEL_0, "name": odd},
            },
        )
        assert added["status_code"] == 200, added
        renamed = await send(
            replies,
            {
                "type": "UpdateOutdial",
                "customer_id": customer,
                "outdial_id": outdial,
                "name": odd + "!",
                "detail": odd,
            },
        )
        assert renamed["status_code"] == 200, renamed
    rows = read_model_bodies(service, [outdial, added["data"]["id"]])
    assert orjson.loads(rows[outdial])["name"] == odd + "!"
    assert orjson.loads(rows[added["data"]["id"]])["destination_0"]["name"] == odd


def read_model_bodies(service: CommandSide, ids: list[str]) -> dict[str, str]:
    """The read model's rendered body of each of these outdials and targets, by id."""
    app = service.app
    dialect = app.store.dialect
    bodies = {}
    with read_transaction(app.recorder) as c:
        for name in (OUTDIALS, TARGETS):
            for resource_id in ids:
                c.execute(
                    dialect.sql(f"SELECT body FROM {table(dialect, name)} WHERE id = ?"),
                    (resource_id,),
                )
                if (row := c.fetchone()) is not None:
                    bodies[resource_id] = str(row[0])
    return bodies
