"""The typed client: one method per command, resource models out, an exception per code."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pydantic
import pytest

from shared import errors
from shared.addresses import Address
from shared.client import OutdialClient
from shared.commands import TargetFields
from shared.resources import CustomerTarget
from tests.fixtures import AMQP_URL, CommandSide, command_side, purge_command_queues
from tests.integration.stack import running_stack
from tests.reliability.load import stored_target_names

pytestmark = pytest.mark.integration

TEL = Address(type="tel", target="+15559876543")
SIP = Address(type="sip", target="alice@example.com")


async def test_every_command_through_its_method(
    service: CommandSide, client: OutdialClient
) -> None:
    customer = uuid.uuid4()
    created = await client.create_outdial(customer, name="spring", detail="d", data="x")
    outdial = created.data
    assert (outdial.name, outdial.detail, outdial.data, outdial.customer_id) == (
        "spring",
        "d",
        "x",
        customer,
    )
    assert created.position > 0

    campaign = uuid.uuid4()
    assert (
        await client.update_outdial(customer, outdial.id, name="n", detail="e")
    ).data.name == "n"
    updated = await client.update_outdial_campaign(customer, outdial.id, campaign)
    assert updated.data.campaign_id == campaign
    assert (await client.update_outdial_data(customer, outdial.id, "y")).data.data == "y"

    one = await client.add_target(
        customer,
        outdial.id,
        TargetFields(name="ann", detail="", data="", destination_0=TEL, destination_1=SIP),
    )
    assert isinstance(one.data, CustomerTarget)
    assert one.data.destination_1 == SIP and one.data.status == "idle"
    many = await client.add_targets(
        customer,
        outdial.id,
        [{"name": f"t{i}", "detail": "", "data": "", "destination_0": TEL} for i in range(3)],
    )
    assert [t.name for t in many.data.result] == ["t0", "t1", "t2"]
    assert many.position > one.position

    await client.delete_target(customer, outdial.id, many.data.result[2].id)
    marked = await client.mark_target_progressing(customer, outdial.id, one.data.id, 1)
    assert (marked.data.status, marked.data.try_count_1) == ("progressing", 1)
    with pytest.raises(errors.TargetProgressing) as conflict:
        await client.mark_target_progressing(customer, outdial.id, one.data.id, 0)
    assert (conflict.value.status, conflict.value.code) == (409, "target_progressing")
    done = await client.update_target_status(customer, outdial.id, one.data.id, "done")
    assert done.data.status == "done"
    with pytest.raises(errors.TargetNotProgressing):
        await client.update_target_status(customer, outdial.id, one.data.id, "idle")

    deleted = await client.delete_outdial(customer, outdial.id)
    assert deleted.data.tm_delete != outdial.tm_delete
    with pytest.raises(errors.OutdialNotFound):
        await client.update_outdial_data(customer, outdial.id, "z")
    # Another customer's outdial is simply not found.
    with pytest.raises(errors.NotFound):
        await client.delete_target(uuid.uuid4(), outdial.id, many.data.result[0].id)


async def test_claims_and_no_available_target(store_url: str, tmp_path: Path) -> None:
    customer = uuid.uuid4()
    async with (
        running_stack(store_url, tmp_path, ["command", "projector"]) as stack,
        OutdialClient(AMQP_URL) as client,
    ):
        outdial = (await client.create_outdial(customer, name="c")).data
        fields = TargetFields(name="a", detail="", data="", destination_2=TEL)
        added = await client.add_target(customer, outdial.id, fields)
        await stack.rt.board.wait_for(added.position, 5)  # candidates come from the read model

        claimed = await client.claim_next_target(customer, outdial.id, [1, 1, 1, 1, 1])
        assert (claimed.data.target.id, claimed.data.destination_index) == (added.data.id, 2)
        assert (claimed.data.destination, claimed.data.target.status) == (TEL, "progressing")
        with pytest.raises(errors.NoAvailableTarget) as none:
            await client.claim_next_target(customer, outdial.id, [1, 1, 1, 1, 1])
        assert (none.value.status, none.value.code) == (404, "no_available_target")


async def test_a_bad_argument_is_refused_before_anything_is_sent(client: OutdialClient) -> None:
    with pytest.raises(errors.InvalidCommand) as refused:
        await client.add_target(
            uuid.uuid4(),
            uuid.uuid4(),
            {
                "name": "x",
                "detail": "",
                "data": "",
                "destination_0": {"type": "tel", "target": "5"},
            },
        )
    assert refused.value.status == 400
    assert [d.loc for d in refused.value.details] == ["destination_0.target"]
    with pytest.raises(pydantic.ValidationError):
        TargetFields(name="x", detail="", data="")  # no destination at all
    with pytest.raises(TypeError):
        await client.create_outdial(uuid.uuid4(), name="x", retry=3)  # type: ignore[call-arg]


async def test_a_retry_reuses_the_message_id_and_applies_once(store_url: str) -> None:
    await purge_command_queues()
    customer = uuid.uuid4()
    target = TargetFields(name="once", detail="", data="", destination_0=TEL)
    async with OutdialClient(AMQP_URL) as client:
        async with command_side(store_url, purge=False):
            outdial = (await client.create_outdial(customer, name="o")).data
        # Nobody consumes now: two attempts time out, and the third is answered
        # once a consumer is back. All three were stored under one message_id.
        sending = asyncio.create_task(
            client.add_target(customer, outdial.id, target, timeout=0.6, retries=3)
        )
        await asyncio.sleep(1.5)
        async with command_side(store_url, purge=False):
            added = await sending
            again = await client.add_target(customer, outdial.id, target)  # a new command
    assert added.data.name == "once" and again.data.id != added.data.id
    assert stored_target_names(store_url) == {"once": 2}  # not 4: the retries applied once


async def test_without_a_url_the_client_uses_outdial_amqp_url(
    service: CommandSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's `OutdialClient()`: the broker (and vhost) of OUTDIAL_AMQP_URL, as
    the service takes it; this run's vhost is no broker's default."""
    monkeypatch.setenv("OUTDIAL_AMQP_URL", AMQP_URL)
    assert urlsplit(AMQP_URL).path not in ("", "/", "/%2F")  # not the default vhost
    async with OutdialClient() as client:
        assert client.amqp_url == AMQP_URL
        created = await client.create_outdial(uuid.uuid4(), name="env")
    assert created.data.name == "env"
