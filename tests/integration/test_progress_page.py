"""The campaign-progress page, rendered by headless Chromium against the running service."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from pathlib import Path

import jwt
import pytest

from shared import tokens
from shared.addresses import Address
from shared.client import OutdialClient
from shared.commands import TargetFields
from tests.fixtures import AMQP_URL
from tests.integration.stack import SECRET, running_stack

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).parents[2] / "var" / "screenshots"
TEL = Address(type="tel", target="+15559876543")


async def chromium(url: str, profile: Path, *args: str) -> str:
    """Run headless Chromium on `url` for a few seconds of page time; its stdout."""
    assert CHROMIUM, "Debian's chromium package is needed (bash .ci/run installs it)"
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # we run as root in CI
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # this machine's network is closed
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1200,520",
        "--virtual-time-budget=5000",  # two polls of the page
        *args,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    return out.decode()


def error_shown(dom: str) -> str:
    found = re.search(r'<div id="error" role="alert">(.*?)</div>', dom, re.S)
    assert found, "no error line in the page"
    return found.group(1)


def no_token_help(dom: str) -> str | None:
    """The page's words on getting a token, when they show (else None)."""
    found = re.search(r'<div id="no-token"( hidden(="")?)?>(.*?)</div>', dom, re.S)
    assert found, "no help on tokens in the page"
    return None if found.group(1) else re.sub(r"<[^>]+>", "", found.group(3))


def cell(dom: str, outdial_id: str, state: str) -> int:
    row = re.search(rf'<tr data-outdial-id="{outdial_id}">(.*?)</tr>', dom, re.S)
    assert row, f"no row for {outdial_id} in the page"
    found = re.search(rf'data-state="{state}">(\d+)<', row.group(1))
    assert found, f"no {state} count in the row"
    return int(found.group(1))


async def test_the_page_shows_each_outdials_progress(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path}/outdial.sqlite3"
    async with (
        running_stack(store_url, tmp_path, ["command", "projector", "query"]) as stack,
        OutdialClient(AMQP_URL) as bus,
    ):
        token = stack.token()
        customer = jwt.decode(token, SECRET, algorithms=["HS256"])["customer_id"]
        spring = (await bus.create_outdial(customer, name="spring campaign")).data
        summer = (await bus.create_outdial(customer, name="summer campaign")).data
        targets = [
            TargetFields(name=f"t{i}", detail="", data="", destination_0=TEL) for i in range(6)
        ]
        added = await bus.add_targets(customer, spring.id, targets)
        await bus.add_targets(customer, summer.id, targets[:2])
        await stack.rt.board.wait_for(added.position, 5)
        # Two calls made: one answered (done), one still ringing (progressing);
        # with at most one try per destination, a third target tried and left idle
        # is exhausted.
        for _ in range(3):
            claim = await bus.claim_next_target(customer, spring.id, [1, 0, 0, 0, 0])
            last = claim
        first, second = added.data.result[0], added.data.result[1]
        await bus.update_target_status(customer, spring.id, first.id, "done")
        idle_again = await bus.update_target_status(customer, spring.id, second.id, "idle")
        await stack.rt.board.wait_for(max(last.position, idle_again.position), 5)
        # Someone else's outdial never shows.
        await bus.create_outdial(uuid.uuid4(), name="another customer's")

        url = f"{stack.base}/?token={token}&max_try_count_0=1"
        dom = await chromium(url, tmp_path / "profile", "--dump-dom")
        assert error_shown(dom) == ""
        assert (cell(dom, spring.id, "idle"), cell(dom, spring.id, "progressing")) == (3, 1)
        assert (cell(dom, spring.id, "done"), cell(dom, spring.id, "exhausted")) == (1, 1)
        assert [cell(dom, summer.id, s) for s in ("idle", "progressing", "done")] == [2, 0, 0]
        assert "spring campaign" in dom and "another customer" not in dom
        assert re.search(r'id="lag">\d+ events<', dom)

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "progress-page.png"
        await chromium(url, tmp_path / "profile", f"--screenshot={shot}")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"screenshot: {shot}")

        # Without a token the page says so instead of showing anything.
        dom = await chromium(f"{stack.base}/", tmp_path / "profile", "--dump-dom")
        assert "cannot load progress: a token is required" in error_shown(dom)
        assert "spring campaign" not in dom


async def test_without_a_usable_token_the_page_says_how_to_get_one(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path}/outdial.sqlite3"
    async with running_stack(store_url, tmp_path, ["query"]) as stack:
        with_one = await chromium(
            f"{stack.base}/?token={stack.token()}", tmp_path / "p", "--dump-dom"
        )
        assert no_token_help(with_one) is None  # a good token: no help shown
        assert "no outdials yet" in with_one

        # No token, and one signed with another secret (as a secret made in
        # another folder signs it): the page names the command that makes one.
        foreign = tokens.mint(uuid.uuid4(), "another-secret-of-at-least-32-bytes-long")
        for query, error in [("", "a token is required"), (f"?token={foreign}", "invalid token")]:
            dom = await chromium(f"{stack.base}/{query}", tmp_path / "p", "--dump-dom")
            assert error in error_shown(dom), dom
            shown = no_token_help(dom)
            assert shown is not None, dom
            assert "outdial token --customer-id CUSTOMER_ID" in shown
            assert f"{stack.base}/?token=TOKEN" in shown
            table = re.search(r'<tbody id="outdials">(.*?)</tbody>', dom, re.S)
            assert table and "loading" not in table.group(1), dom
            assert "see above how to get one" in table.group(1)
