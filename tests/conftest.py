"""Fixtures shared by every test: a broker vhost and a database of this test run's
own, and the two stores the service runs on.

Each run of the suite makes a RabbitMQ virtual host and a PostgreSQL database
of its own when this file is loaded (before any other conftest or test module,
which read the URLs once), points `OUTDIAL_AMQP_URL` and
`OUTDIAL_TEST_POSTGRES_URL` (and so every `outdial` child process) at them, and
deletes both at the end: a developer's own `outdial run`, or a second test run
on the same machine, neither sees nor disturbs this one's queues and tables,
and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from services.store import connect_postgres, parse_store_url
from shared.config import DEFAULT_AMQP_URL

BASE_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
RUN = uuid.uuid4().hex[:10]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-scale",
        type=int,
        default=1,
        help="multiply the sizes of tests/reliability (CI: 1; e.g. 10 for a 10-minute soak)",
    )


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


class _Isolation:
    """What this run made, to delete at its end."""

    base_amqp = os.environ.get("OUTDIAL_AMQP_URL", DEFAULT_AMQP_URL)
    base_postgres = os.environ.get("OUTDIAL_TEST_POSTGRES_URL", BASE_POSTGRES_URL)
    vhost: str | None = None
    database: str | None = None


def _isolate() -> None:
    vhost = f"outdial-test-{RUN}"
    if shutil.which("rabbitmqctl"):
        user = urlsplit(_Isolation.base_amqp).username or "guest"
        try:
            _rabbitmqctl("add_vhost", vhost)
            _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            # The broker is stopped: the unit tests need none, and the others
            # say so when they cannot connect.
            pass
        else:
            _Isolation.vhost = vhost
            os.environ["OUTDIAL_AMQP_URL"] = _with_path(
                _Isolation.base_amqp, "/" + quote(vhost, safe="")
            )
    database = f"outdial_test_{RUN}"
    with (
        contextlib.suppress(Exception),
        connect_postgres(parse_store_url(_Isolation.base_postgres)) as c,
    ):
        c.execute(f'CREATE DATABASE "{database}"')
        _Isolation.database = database
        os.environ["OUTDIAL_TEST_POSTGRES_URL"] = _with_path(
            _Isolation.base_postgres, "/" + database
        )


_isolate()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _Isolation.vhost is not None:
        with contextlib.suppress(Exception):
            _rabbitmqctl("delete_vhost", _Isolation.vhost)
        os.environ["OUTDIAL_AMQP_URL"] = _Isolation.base_amqp
    if _Isolation.database is not None:
        with (
            contextlib.suppress(Exception),
            connect_postgres(parse_store_url(_Isolation.base_postgres)) as c,
        ):
            c.execute(f'DROP DATABASE IF EXISTS "{_Isolation.database}" WITH (FORCE)')
        os.environ["OUTDIAL_TEST_POSTGRES_URL"] = _Isolation.base_postgres


def postgres_url() -> str:
    return os.environ.get("OUTDIAL_TEST_POSTGRES_URL", BASE_POSTGRES_URL)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty event store: a new SQLite file, or a new schema in PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store')}/outdial.sqlite3"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_url()}?schema={schema}"
    yield url
    with connect_postgres(parse_store_url(url)) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
