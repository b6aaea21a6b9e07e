"""Fixtures shared by every test: a broker vhost and a database of this test run's
own, and the two stores the service runs on.

Each run of the suite makes a RabbitMQ virtual host and a PostgreSQL database
of its own before any test module is imported, points `OUTDIAL_AMQP_URL` and
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


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    base_amqp = os.environ.get("OUTDIAL_AMQP_URL", DEFAULT_AMQP_URL)
    base_postgres = os.environ.get("OUTDIAL_TEST_POSTGRES_URL", BASE_POSTGRES_URL)
    config.stash[_BASE] = (base_amqp, base_postgres)
    vhost = f"outdial-test-{RUN}"
    if shutil.which("rabbitmqctl"):
        user = urlsplit(base_amqp).username or "guest"
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        config.stash[_VHOST] = vhost
        os.environ["OUTDIAL_AMQP_URL"] = _with_path(base_amqp, "/" + quote(vhost, safe=""))
    database = f"outdial_test_{RUN}"
    with contextlib.suppress(Exception), connect_postgres(parse_store_url(base_postgres)) as c:
        c.execute(f'CREATE DATABASE "{database}"')
        config.stash[_DATABASE] = database
        os.environ["OUTDIAL_TEST_POSTGRES_URL"] = _with_path(base_postgres, "/" + database)


def pytest_unconfigure(config: pytest.Config) -> None:
    base = config.stash.get(_BASE, None)
    if base is None:
        return
    base_amqp, base_postgres = base
    if (vhost := config.stash.get(_VHOST, None)) is not None:
        with contextlib.suppress(Exception):
            _rabbitmqctl("delete_vhost", vhost)
        os.environ["OUTDIAL_AMQP_URL"] = base_amqp
    if (database := config.stash.get(_DATABASE, None)) is not None:
        with contextlib.suppress(Exception), connect_postgres(parse_store_url(base_postgres)) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        os.environ["OUTDIAL_TEST_POSTGRES_URL"] = base_postgres


_BASE = pytest.StashKey[tuple[str, str]]()
_VHOST = pytest.StashKey[str]()
_DATABASE = pytest.StashKey[str]()


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
