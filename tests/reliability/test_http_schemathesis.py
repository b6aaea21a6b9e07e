"""schemathesis against the service's own `/openapi.json`, on the real `outdial run`.

Two customers, each with outdials and targets (some deleted), so that generated
requests hit real data: a generated path id is often swapped for a seeded one,
of either customer, and each request carries one of the two customers' tokens.
For every operation: schemathesis's coverage cases (boundaries, missing and
wrong-typed fields), then Hypothesis-generated valid and invalid requests. Every
answer must pass schemathesis's checks (no 5xx; status, content type, headers
and body as documented; invalid input refused, valid input accepted; no answer
without a token) and carry none of the other customer's ids or stored texts.

Two things are steered, not left to chance, and why:
- `X-Outdial-Min-Position` ahead of the store is answered 504 after 5 s, as
  documented (CONTRACT 5); generated ones are lowered to a reached position, or
  each would cost 5 s and fail `not_a_server_error`.
- An `AddTarget` body may fit the schema and still be refused 400 at
  `destination_N.target`: the document says why (a possible phone number,
  email-validator's verdict, a port's range; no JSON Schema can). Only that
  refusal is allowed to a schema-valid body; any other is a failure.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.fixtures import AMQP_URL, purge_command_queues
from tests.integration.processes import OUTDIAL, free_port

pytestmark = pytest.mark.integration

SECRET = "schemathesis-test-secret-of-at-least-32-bytes"
# Per operation, at scale 1: schemathesis's coverage cases (at most), and generated
# requests per mode (valid, invalid): about 20 s per store on two cores
# (the reliability suite as a whole is kept within six minutes).
COVERAGE_CASES = 35
EXAMPLES = 15
SETTINGS: dict[str, Any] = {
    "generation": {
        # The service ignores unknown query parameters and headers, as HTTP
        # services do: sending them is not invalid input.
        "allow-extra-parameters": False,
        # Tokens are ours (the customers'); generated ones would only be 401.
        "with-security-parameters": False,
    }
}
CONFIG = schemathesis.Config.from_dict(SETTINGS)
ADD_TARGET = "POST /v1.0/outdials/{id}/targets"
TEL = {"type": "tel", "target": "+15559876543"}
T = TypeVar("T")


# ---- the service ----------------------------------------------------------------


@contextmanager
def outdial_run(store_url: str, tmp_path: Path) -> Iterator[str]:
    """`outdial run` as a child process; its base URL once /healthz answers."""
    asyncio.run(purge_command_queues())
    port = free_port()
    env = {
        **os.environ,
        "OUTDIAL_AMQP_URL": AMQP_URL,
        "OUTDIAL_DATABASE_URL": store_url,
        "OUTDIAL_HTTP_PORT": str(port),
        "OUTDIAL_JWT_SECRET": SECRET,
    }
    log = tmp_path / "outdial.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [OUTDIAL, "run"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "outdial run did not answer /healthz"
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        # The service logs every 500 with its traceback: show them with the failure.
        failed = [line for line in log.read_text().splitlines() if "request failed" in line]
        assert not failed, "\n".join(failed)


def token(customer_id: str) -> str:
    out = subprocess.run(
        [OUTDIAL, "token", "--customer-id", customer_id],
        env={**os.environ, "OUTDIAL_JWT_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@dataclass
class Customer:
    id: str
    token: str
    outdials: list[str] = field(default_factory=list)
    targets: list[tuple[str, str]] = field(default_factory=list)  # (outdial, target)
    texts: list[str] = field(default_factory=list)

    @property
    def markers(self) -> list[str]:
        return [*self.outdials, *(t for _, t in self.targets), *self.texts]


@dataclass
class Api:
    base: str
    session: requests.Session
    customers: list[Customer]
    position: int = 0  # one the read model has reached

    def write(self, customer: Customer, method: str, path: str, body: Any = None) -> Any:
        r = self.session.request(
            method,
            self.base + path,
            json=body,
            headers={"Authorization": f"Bearer {customer.token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        self.position = max(self.position, int(r.headers["X-Outdial-Position"]))
        return r.json()

    def other(self, customer: Customer) -> Customer:
        return next(c for c in self.customers if c is not customer)


def seed(api: Api, customer: Customer, label: str) -> None:
    """Two outdials (the second deleted), three targets of the first (one deleted)."""
    secret = f"{label}-secret-{uuid.uuid4().hex[:8]}"
    customer.texts += [f"{secret}-outdial", f"{secret}-target"]
    for _ in range(2):
        body = {"name": f"{secret}-outdial", "detail": "", "data": f"{secret}-outdial"}
        customer.outdials.append(api.write(customer, "POST", "/v1.0/outdials", body)["id"])
    first = customer.outdials[0]
    for destination in [TEL, {"type": "sip", "target": "agent@example.com"}, TEL]:
        fields = {
            "name": f"{secret}-target",
            "detail": "",
            "data": "",
            "destination_0": destination,
        }
        target = api.write(customer, "POST", f"/v1.0/outdials/{first}/targets", fields)
        customer.targets.append((first, target["id"]))
    api.write(customer, "DELETE", f"/v1.0/outdials/{first}/targets/{customer.targets[-1][1]}")
    api.write(customer, "DELETE", f"/v1.0/outdials/{customer.outdials[1]}")


# ---- one request --------------------------------------------------------------


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    seeded_reads: int = 0  # 200s of GETs of a seeded resource by its owner
    foreign: int = 0  # answers to a customer naming the other's resources

    def __str__(self) -> str:
        statuses = dict(sorted(self.statuses.items()))
        return (
            f"{sum(self.statuses.values())} requests, statuses {statuses}, "
            f"{self.seeded_reads} reads of seeded resources, "
            f"{self.foreign} requests naming another customer's"
        )


def aim(api: Api, case: Case[Any], choose: Callable[[Sequence[Any]], Any]) -> None:
    """Swap the generated ids of a valid case for seeded ones, often; lower a
    read's `X-Outdial-Min-Position` to one reached (see the module's docstring)."""
    meta = case.meta
    path = case.path_parameters or {}
    if meta is not None and not meta.is_negative_at(ParameterLocation.PATH):
        if "target_id" in path:
            pairs = [pair for c in api.customers for pair in c.targets]
            path["id"], path["target_id"] = choose([*pairs, (path["id"], path["target_id"])])
        elif "id" in path:
            path["id"] = choose([*(o for c in api.customers for o in c.outdials), path["id"]])
    headers = case.headers if case.headers is not None else {}
    wanted = headers.get("X-Outdial-Min-Position")
    if isinstance(wanted, str | int):
        try:
            if int(wanted) > api.position:
                headers["X-Outdial-Min-Position"] = str(api.position)
        except ValueError:
            pass  # not an integer: the invalid input under test


def exercise(api: Api, case: Case[Any], customer: Customer, tally: Tally) -> None:
    headers = {"Authorization": f"Bearer {customer.token}"}
    response = case.call(base_url=api.base, session=api.session, headers=headers, timeout=30)
    tally.statuses[response.status_code] += 1
    sent = f"{response.request.url} {response.request.body!r}"
    other = api.other(customer)
    if any(marker in sent for marker in other.markers):
        tally.foreign += 1
    if case.method == "GET" and response.status_code == 200:
        tally.seeded_reads += any(marker in sent for marker in customer.markers)
    add_target = case.operation.label == ADD_TARGET
    case.validate_response(
        response,
        headers=headers,
        excluded_checks=[positive_data_acceptance] if add_target else [],
    )
    if add_target:
        accepted_or_semantic(case, response)
    for marker in other.markers:
        assert marker not in response.text or marker in sent, (
            f"{marker!r} of another customer in the answer to {case.method} {sent}: "
            f"{response.text[:500]}"
        )


def accepted_or_semantic(case: Case[Any], response: Response) -> None:
    """`positive_data_acceptance` for AddTarget, allowing only the documented refusal."""
    meta = case.meta
    if meta is None or meta.generation.mode is not GenerationMode.POSITIVE:
        return
    if response.status_code != 400:
        return
    details = response.json()["error"].get("details", [])
    where = {d["loc"] for d in details}
    assert details and where <= {f"destination_{i}.target" for i in range(5)}, (
        f"a schema-valid AddTarget was refused: {response.text}"
    )


# ---- the test ----------------------------------------------------------------------


def test_every_answer_is_as_documented(store_url: str, tmp_path: Path, scale: int) -> None:
    started = time.monotonic()
    with outdial_run(store_url, tmp_path) as base, requests.Session() as session:
        customers = [Customer(c, token(c)) for c in (str(uuid.uuid4()), str(uuid.uuid4()))]
        api = Api(base, session, customers)
        for customer, label in zip(customers, ("alpha", "beta"), strict=True):
            seed(api, customer, label)
        document = session.get(f"{base}/openapi.json", timeout=10).json()
        schema = schemathesis.openapi.from_dict(document, config=CONFIG)
        tally = Tally()
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        methods = {"get", "put", "post", "delete", "patch"}
        assert len(operations) == sum(len(methods & set(i)) for i in document["paths"].values())
        picks = random.Random(0)  # the coverage cases' choices: the same every run
        for operation in operations:
            cases = schema.iter_coverage_cases(
                operation,
                generation_modes=list(GenerationMode),
                generation_config=schema.config.generation_for(
                    operation=operation, phase="coverage"
                ),
            )
            for case in islice(cases, COVERAGE_CASES * scale):
                aim(api, case, picks.choice)
                exercise(api, case, picks.choice(customers), tally)
            for mode in GenerationMode:
                if mode is GenerationMode.NEGATIVE and not has_input(operation):
                    continue  # the operations routes: nothing to make invalid
                fuzz(api, operation, mode, EXAMPLES * scale, tally)
        seconds = time.monotonic() - started
        print(f"\nschemathesis, {store_url.split(':')[0]}: {tally} in {seconds:.0f} s")
    assert not [s for s in tally.statuses if s >= 500]
    # The test's power: it read real data, and probed the other customer's.
    assert tally.seeded_reads >= 10, tally
    assert tally.foreign >= 20, tally


def has_input(operation: Any) -> bool:
    parameters = (operation.path_parameters, operation.query, operation.headers)
    return any(len(p) for p in (*parameters, operation.cookies, operation.body))


def fuzz(api: Api, operation: Any, mode: GenerationMode, examples: int, tally: Tally) -> None:
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def one(case: Case[Any], data: st.DataObject) -> None:
        def choose(options: Sequence[T]) -> T:
            return data.draw(st.sampled_from(options))

        aim(api, case, choose)
        exercise(api, case, choose(api.customers), tally)

    one()
