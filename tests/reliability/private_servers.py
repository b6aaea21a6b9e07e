"""A RabbitMQ node and a PostgreSQL server of a test's own, to stop and start at will.

Stopping the machine's own broker or database would break every other test (and
anyone else) using them; a private one on a free port breaks only the test that
asked for it. Both run from the machine's installed packages, in a temporary
directory that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.integration.processes import free_port

PG_BIN = (
    Path("/usr/lib/postgresql")
    / (
        sorted(os.listdir("/usr/lib/postgresql"))[-1]
        if Path("/usr/lib/postgresql").exists()
        else ""
    )
    / "bin"
)


def _as(user: str) -> dict[str, object]:
    """Popen arguments that run a child as `user` (the servers refuse to run as root)."""
    if os.getuid() != 0:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def _own(path: Path, user: str) -> None:
    if os.getuid() == 0:
        shutil.chown(path, user, user)


@dataclass
class PrivateRabbitMQ:
    node: str
    port: int

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.node, *args], check=True, capture_output=True)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup", "--timeout", "60")


@contextlib.contextmanager
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    port, dist = free_port(), free_port()
    node = f"outdial-test-{port}@localhost"
    home = Path(tempfile.mkdtemp(prefix="outdial-rabbit-"))
    (home / "mnesia").mkdir()
    (home / "log").mkdir()
    (home / "enabled_plugins").write_text("[].\n")  # no management plugin: its port is taken
    (home / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{port}\n")
    for path in [home, *home.iterdir()]:
        _own(path, "rabbitmq")
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_PID_FILE": str(home / "pid"),
    }
    server = PrivateRabbitMQ(node, port)
    subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, capture_output=True)
    try:
        subprocess.run(
            ["rabbitmqctl", "-n", node, "wait", str(home / "pid"), "--timeout", "60"],
            check=True,
            capture_output=True,
        )
        yield server
    finally:
        subprocess.run(["rabbitmqctl", "-n", node, "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class PrivatePostgres:
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", *args],
            check=True,
            capture_output=True,
            **_as("postgres"),  # type: ignore[call-overload]
        )

    def stop(self) -> None:
        # "fast": what an operator's restart does; open connections are cut.
        self._ctl("stop", "-m", "fast")

    def start(self) -> None:
        self._ctl(
            "start",
            "-l",
            str(self.data / "server.log"),
            "-o",
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1",
        )


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    home = Path(tempfile.mkdtemp(prefix="outdial-pg-"))
    data = home / "data"
    _own(home, "postgres")
    subprocess.run(
        [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
        **_as("postgres"),  # type: ignore[call-overload]
    )
    server = PrivatePostgres(data, free_port())
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server._ctl("stop", "-m", "immediate")
        shutil.rmtree(home, ignore_errors=True)
