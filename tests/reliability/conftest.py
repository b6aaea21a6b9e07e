"""The reliability suite: faults injected into real processes, hostile input.

It stands on the integration fixtures (the real RabbitMQ, the real stores). Sizes
scale with `--reliability-scale` (CI runs 1); every loop is bounded in count and time.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import _services_run, client, service  # noqa: F401


@pytest.fixture
def scale(request: pytest.FixtureRequest) -> int:
    """How many times the CI sizes to run (`pytest --reliability-scale N`)."""
    return int(request.config.getoption("--reliability-scale"))
