"""Fixtures shared by every test: the two stores the service runs on."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from shared.store import connect_postgres, parse_store_url


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-scale",
        type=int,
        default=1,
        help="multiply the sizes of tests/reliability (CI: 1; e.g. 10 for a 10-minute soak)",
    )


POSTGRES_URL = os.environ.get(
    "OUTDIAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty event store: a new SQLite file, or a new schema in PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store')}/outdial.sqlite3"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES_URL}?schema={schema}"
    yield url
    with connect_postgres(parse_store_url(url)) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
