"""The README, run as written: its run command (`bash scripts/run-local`), then its
walk through the tutorial, its shell blocks one after the other, in the folder the
service keeps its files in."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.fixtures import AMQP_URL
from tests.integration.processes import OUTDIAL, free_port

pytestmark = pytest.mark.integration

REPOSITORY = Path(__file__).parents[2]
README = (REPOSITORY / "README.md").read_text()


def walkthrough() -> str:
    section = README.split("## A walk through the tutorial\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```sh\n(.*?)```", section, re.DOTALL))


def test_the_readme_tutorial_works_as_written(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(Path(OUTDIAL).parents[1])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")}
    env |= {"OUTDIAL_AMQP_URL": AMQP_URL, "OUTDIAL_HTTP_PORT": str(port)}
    # The run command runs in the checkout; its files go where this test can see them
    # (the tutorial's commands run in the folder of `var/`, as the README says).
    service_env = env | {
        "OUTDIAL_VAR_DIR": str(tmp_path / "var"),
        "OUTDIAL_DATABASE_URL": f"sqlite:///{tmp_path}/var/outdial.sqlite3",
    }
    service = subprocess.Popen(
        ["bash", "scripts/run-local"],
        cwd=REPOSITORY,
        env=service_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert service.stdout is not None
        for line in service.stdout:
            if b"HTTP API on" in line:
                break
        script = walkthrough().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        final = orjson.loads(done.stdout.strip().splitlines()[-1])
        [target] = final["result"]
        assert (target["status"], target["try_count_0"]) == ("done", 1), target
        assert "dial +15559876543 for test destination 0" in done.stdout
    finally:
        service.send_signal(signal.SIGTERM)
        started = time.monotonic()
        service.wait(30)
        assert time.monotonic() - started < 30
    assert service.returncode == 0
