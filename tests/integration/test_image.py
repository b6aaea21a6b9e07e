"""deploy/Dockerfile built and its image run on this machine, with podman.

No registry is reachable here, so the base is made from Debian's packages
(`deploy/make-base-image`: debootstrap, python3, python3-venv, ca-certificates)
when it is not there yet, and the image is built on it with
`--build-arg PYTHON_IMAGE=`; the default base, python:3.11-slim-bookworm, is
never pulled. Podman's storage keeps both, so later runs build from cached
layers (a change to the code reinstalls the project alone).

Then the image is run as deploy/README.md runs it, each container in a network
namespace of its own (slirp4netns; the host's loopback, where this run's
broker vhost and PostgreSQL database listen, is 10.0.2.2 there) with its port
published on the host's 127.0.0.1:
- `outdial run` on SQLite in a volume, with the image's defaults (so the API
  listens on the container's 0.0.0.0): healthy, a command over the bus read
  back over HTTP with a token from `outdial token` in the container, uid 10001,
  the image's HEALTHCHECK, SIGTERM ends it with status 0, and a second
  container on the same volume has the outdial and the secret;
- `outdial command`, `outdial relay` and `outdial query` started together on one
  PostgreSQL schema, as compose.yaml and k8s/ run them: a read-only root
  filesystem (no tmpfs either), every capability dropped, no new privileges,
  OUTDIAL_JWT_SECRET given; a write over HTTP goes over the bus, is read back
  over HTTP and published as an event; a one-off `outdial replay --check`
  beside them finds the read model equal to the events; each stops on SIGTERM
  with status 0;
- the same read-only container without OUTDIAL_JWT_SECRET refuses to start, in
  one line naming OUTDIAL_VAR_DIR: the filesystem really is read-only;
- deploy/compose.yaml itself with podman-compose (the rabbitmq and postgres
  images, which cannot be pulled, replaced by stand-ins built from Debian's
  packages): every component healthy on one PostgreSQL store, no projector, a
  token of query-1 good at query-2, both commands consuming, each stopping with 0.

Run only when asked for (OUTDIAL_TEST_IMAGE=1) and where podman is installed: not in CI.
About three minutes on 2 cores from nothing (the base made, every image built);
less when podman's storage already has the base and the layers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import orjson
import pytest
import yaml

from services.store import connect_postgres, parse_store_url
from shared import tokens
from shared.bus import EVENT_EXCHANGE
from shared.client import OutdialClient
from tests.conftest import postgres_url
from tests.fixtures import AMQP_URL, purge_command_queues
from tests.integration.processes import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
BASE_IMAGE = "localhost/outdial-base:bookworm"
# One tag for every test run on this machine: its layers are the next run's cache.
IMAGE = "localhost/outdial:test"
# The host's loopback as slirp4netns shows it to a container (allow_host_loopback).
HOST_LOOPBACK = "10.0.2.2"
NETWORK = "slirp4netns:allow_host_loopback=true"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Stand-ins for compose.yaml's rabbitmq:3.13-management and postgres:15, which
# cannot be pulled here: Debian's RabbitMQ (3.10, which reads RABBITMQ_DEFAULT_USER
# and _PASS itself) and PostgreSQL 15, with an entry point doing what the postgres
# image's does with POSTGRES_USER, _PASSWORD and _DB. Their health checks in
# compose.yaml (rabbitmq-diagnostics, pg_isready) are the same programs.
STAND_INS = {
    "rabbitmq": (
        "localhost/outdial-test-rabbitmq:bookworm",
        """
FROM {base}
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \\
    && rm -rf /var/lib/apt/lists/*
USER rabbitmq
CMD ["rabbitmq-server"]
""",
    ),
    "postgres": (
        "localhost/outdial-test-postgres:bookworm",
        """
FROM {base}
RUN mkdir -p /etc/postgresql-common \\
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \\
    && apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \\
    && rm -rf /var/lib/apt/lists/* \\
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
COPY entrypoint /usr/local/bin/postgres-entrypoint
ENV PGDATA=/var/lib/postgresql/data
USER postgres
CMD ["/usr/local/bin/postgres-entrypoint"]
""",
    ),
}
POSTGRES_ENTRYPOINT = """#!/bin/sh
set -eu
bin=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    printf '%s\\n' "$POSTGRES_PASSWORD" > /tmp/password
    "$bin/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/password \\
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f /tmp/password
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "CREATE DATABASE \\"$POSTGRES_DB\\"" \\
        | "$bin/postgres" --single -D "$PGDATA" postgres >/dev/null
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp
"""
SECRET = "image-test-secret-of-at-least-32-bytes"
UID = 10001
RUN = uuid.uuid4().hex[:8]


# --- The engine ---------------------------------------------------------------


def _limits() -> list[str]:
    """Ulimits this machine lets a container have: podman's defaults (over a
    million open files) are more than the hard limits here, and its runtime may
    not raise them. Enough for the service and its tests."""
    wanted = {
        "nofile": (resource.RLIMIT_NOFILE, 20_000),
        "nproc": (resource.RLIMIT_NPROC, 4096),
    }
    limits = []
    for name, (which, enough) in wanted.items():
        hard = resource.getrlimit(which)[1]
        value = enough if hard == resource.RLIM_INFINITY else min(hard, enough)
        limits.append(f"{name}={value}:{value}")
    return limits


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment podman runs in: a containers.conf of this test's own with
    runc (crun fails on this kernel's cgroups) and ulimits the machine permits."""
    if os.environ.get("OUTDIAL_TEST_IMAGE") != "1":
        # Asked for, not run by default: building and running five containers on
        # two cores takes 1 to 3 minutes that the suite cannot spare (CI's limit),
        # and podman is not on every machine the suite runs on.
        pytest.skip("the image's test runs with OUTDIAL_TEST_IMAGE=1 (see deploy/README.md)")
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman runc debootstrap slirp4netns)")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    runtime = shutil.which("runc") or shutil.which("runc", path="/usr/sbin")
    lines = ["[containers]", f"default_ulimits = {json.dumps(_limits())}"]
    if runtime:
        lines += ["[engine]", 'runtime = "runc"']
    conf.write_text("\n".join(lines) + "\n")
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(
    env: dict[str, str], *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:3])} ... exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def image(engine: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image, built from deploy/Dockerfile on the Debian-made base."""
    if podman(engine, "image", "exists", BASE_IMAGE, check=False).returncode != 0:
        # A fresh machine: about two minutes (debootstrap, then Debian's updates).
        made = subprocess.run(
            ["bash", str(DEPLOY / "make-base-image"), BASE_IMAGE],
            env=engine,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert made.returncode == 0, made.stdout + made.stderr
    args = [
        f"--build-arg=PYTHON_IMAGE={BASE_IMAGE}",
        "--file",
        str(DEPLOY / "Dockerfile"),
    ]
    if CA_BUNDLE.exists():
        # This machine's certificate authorities (a proxy may sign PyPI's
        # certificates) for the build's pip, which otherwise trusts its own.
        pip_conf = tmp_path_factory.mktemp("pip") / "pip.conf"
        pip_conf.write_text(f"[global]\ncert = {CA_BUNDLE}\n")
        args += [f"--volume={CA_BUNDLE}:{CA_BUNDLE}:ro", f"--volume={pip_conf}:/etc/pip.conf:ro"]
    build(engine, IMAGE, *args, str(ROOT))
    return IMAGE


def build(engine: dict[str, str], tag: str, *args: str) -> None:
    """`podman build` of `tag`, removing the image the tag named before when it is
    another (a change to the code, a new base): the next build is made from this
    one's layers, and rebuilds do not pile up."""
    before = podman(engine, "image", "inspect", "--format", "{{.Id}}", tag, check=False)
    podman(
        engine,
        "build",
        "--format=docker",  # OCI images have no HEALTHCHECK
        "--network=host",  # pip reaches PyPI, apt-get Debian's mirror
        "--tag",
        tag,
        *args,
        timeout=900,
    )
    after = podman(engine, "image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    if before.returncode == 0 and before.stdout.strip() != after:
        podman(engine, "rmi", before.stdout.strip(), check=False)


@pytest.fixture
def containers(engine: dict[str, str]) -> Iterator[list[str]]:
    """Names of containers and volumes to remove at the end, whatever happened."""
    made: list[str] = []
    yield made
    for name in made:
        podman(engine, "rm", "--force", "--time", "0", name, check=False)
    for name in made:
        podman(engine, "volume", "rm", name, check=False)


# --- Reaching it --------------------------------------------------------------


def from_a_container(url: str) -> str:
    """`url` as a container sees it: the host's loopback is HOST_LOOPBACK there."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        return url
    user, at, host = parts.netloc.rpartition("@")
    host = host.replace(parts.hostname, HOST_LOOPBACK, 1)
    return urlunsplit(parts._replace(netloc=f"{user}{at}{host}"))


def http(port: int, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.data = orjson.dumps(body)
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, orjson.loads(answer.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        with contextlib.suppress(orjson.JSONDecodeError):
            return e.code, orjson.loads(text)
        return e.code, text


def wait_healthy(engine: dict[str, str], name: str, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # not listening yet
            if http(port, "/healthz")[0] == 200:
                return
        state = podman(engine, "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state != "running":
            break
        time.sleep(0.25)
    logs = podman(engine, "logs", name, check=False)
    raise AssertionError(f"{name} never answered /healthz:\n{logs.stdout}{logs.stderr}")


def wait_for_log(engine: dict[str, str], name: str, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        logs = podman(engine, "logs", name, check=False)
        if text in logs.stdout + logs.stderr:
            return
        state = podman(engine, "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state != "running" or time.monotonic() > deadline:
            raise AssertionError(f"{name} never logged {text!r}:\n{logs.stdout}{logs.stderr}")
        time.sleep(0.25)


def process_uid(engine: dict[str, str], name: str) -> int:
    """The real uid of the container's first process (the service itself)."""
    status = podman(engine, "exec", name, "cat", "/proc/1/status").stdout
    (uid_line,) = [line for line in status.splitlines() if line.startswith("Uid:")]
    real, effective, _saved, _fs = (int(n) for n in uid_line.split()[1:])
    assert real == effective
    return real


def stop(engine: dict[str, str], name: str) -> tuple[int, float]:
    """SIGTERM (the image's STOPSIGNAL), as `docker stop` and Kubernetes send it:
    the exit status and how long it took (30 s, then SIGKILL)."""
    started = time.monotonic()
    podman(engine, "stop", "--time", "30", name, timeout=60)
    took = time.monotonic() - started
    code = podman(engine, "inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    return int(code), took


async def create_outdial(customer: uuid.UUID, name: str) -> dict[str, Any]:
    async with OutdialClient(AMQP_URL) as client:
        reply = await client.send(
            {
                "type": "CreateOutdial",
                "customer_id": str(customer),
                "name": name,
                "detail": "",
                "data": "",
            },
            timeout=30,
        )
    assert reply["status_code"] == 200, reply
    data: dict[str, Any] = reply["data"]
    return data


# --- The tests ----------------------------------------------------------------


def test_the_image_is_what_kubernetes_and_compose_expect(
    engine: dict[str, str], image: str
) -> None:
    (config,) = json.loads(podman(engine, "image", "inspect", image).stdout)
    settings = config["Config"]
    assert settings["User"] == f"{UID}:{UID}"
    assert settings["Cmd"] == ["outdial", "run"]
    assert settings["StopSignal"] == "SIGTERM"
    env = dict(item.split("=", 1) for item in settings["Env"])
    assert env["OUTDIAL_HTTP_HOST"] == "0.0.0.0"
    assert not {k for k in env if k.startswith("OUTDIAL_")} - {
        "OUTDIAL_HTTP_HOST",
        "OUTDIAL_VAR_DIR",
    }
    assert config["Healthcheck"]["Test"][0] == "CMD"
    labels = settings["Labels"]
    assert labels["org.opencontainers.image.base.name"] == BASE_IMAGE
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    # Only the venv of the build stage: no source tree, no pip, no compiler.
    listing = podman(
        engine, "run", "--rm", "--network=none", image, "sh", "-c",
        "ls /opt/outdial/bin; ls -d /src 2>&1; command -v gcc pip pip3 || true",
    ).stdout  # fmt: skip
    assert "outdial" in listing.split()
    assert "No such file or directory" in listing
    assert not {"pip", "gcc", "pip3"} & {Path(p).name for p in listing.split()}


def test_outdial_run_on_sqlite_in_a_volume(
    engine: dict[str, str], image: str, containers: list[str]
) -> None:
    asyncio.run(purge_command_queues())
    volume = f"outdial-test-{RUN}-var"
    containers.append(volume)
    podman(engine, "volume", "create", volume)
    customer = uuid.uuid4()

    def start(name: str) -> int:
        port = free_port()
        containers.append(name)
        podman(
            engine, "run", "--detach", "--name", name, f"--network={NETWORK}",
            "--publish", f"127.0.0.1:{port}:8080",
            "--volume", f"{volume}:/var/lib/outdial/var",
            "--env", f"OUTDIAL_AMQP_URL={from_a_container(AMQP_URL)}",
            image,
        )  # fmt: skip
        wait_healthy(engine, name, port)
        return port

    first = f"outdial-test-{RUN}-run"
    port = start(first)
    assert http(port, "/readyz") == (200, {"status": "ready"})
    assert process_uid(engine, first) == UID
    # The image's own HEALTHCHECK, run in the container.
    assert podman(engine, "healthcheck", "run", first, check=False).returncode == 0
    # The secret made on first start, in the volume: `outdial token` there uses it.
    token = podman(
        engine, "exec", first, "outdial", "token", "--customer-id", str(customer)
    ).stdout.strip()
    outdial = asyncio.run(create_outdial(customer, "made over the bus"))
    status, body = http(port, f"/v1.0/outdials/{outdial['id']}", token)
    assert (status, body["name"]) == (200, "made over the bus"), body
    assert stop(engine, first)[0] == 0
    assert '"msg":"stopping"' in podman(engine, "logs", first).stderr

    # Another container on the same volume: the store and the secret are kept.
    second = f"outdial-test-{RUN}-again"
    port = start(second)
    status, body = http(port, f"/v1.0/outdials/{outdial['id']}", token)
    assert (status, body["id"]) == (200, outdial["id"]), body
    code, took = stop(engine, second)
    assert code == 0
    assert took < 20


@pytest.fixture
def schema_url() -> Iterator[str]:
    schema = f"image_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_url()}?schema={schema}"
    yield url
    with connect_postgres(parse_store_url(url)) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# As compose.yaml and deploy/k8s/ run every component (readOnlyRootFilesystem,
# capabilities dropped, no privilege escalation); --read-only-tmpfs=false: not
# even /tmp is writable, as in Kubernetes.
LOCKED_DOWN = (
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
)


def test_components_on_postgresql_with_a_read_only_root_filesystem(
    engine: dict[str, str], image: str, containers: list[str], schema_url: str
) -> None:
    asyncio.run(purge_command_queues())
    env = [
        f"--env=OUTDIAL_AMQP_URL={from_a_container(AMQP_URL)}",
        f"--env=OUTDIAL_DATABASE_URL={from_a_container(schema_url)}",
    ]
    port = free_port()
    names = {c: f"outdial-test-{RUN}-{c}" for c in ("command", "relay", "query")}
    # All at once, as compose starts them: each makes the schema ready in turn.
    for component, name in names.items():
        containers.append(name)
        options = [*LOCKED_DOWN, *env, "--name", name, f"--network={NETWORK}"]
        if component == "query":
            options += [f"--env=OUTDIAL_JWT_SECRET={SECRET}", "--publish", f"127.0.0.1:{port}:8080"]
        else:
            options.append("--no-healthcheck")  # no HTTP: as compose.yaml says
        podman(engine, "run", "--detach", *options, image, "outdial", component)
    wait_healthy(engine, names["query"], port)
    for name in names.values():
        wait_for_log(engine, name, '"msg":"ready"')
        assert process_uid(engine, name) == UID

    customer = uuid.uuid4()
    token = tokens.mint(customer, SECRET)

    async def write_and_hear_the_event() -> dict[str, Any]:
        connection = await aio_pika.connect_robust(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                EVENT_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(exchange, "outdial_created")
            status, made = await asyncio.to_thread(
                http,
                port,
                "/v1.0/outdials",
                token,
                {"name": "made over HTTP", "detail": "", "data": ""},
            )
            assert status == 200, made
            async with queue.iterator() as messages:
                async with asyncio.timeout(30):
                    async for message in messages:
                        event = orjson.loads(message.body)
                        if event["data"]["id"] == made["id"]:
                            await message.ack()
                            return {"made": made, "event": event}
                        await message.ack()
        raise AssertionError("unreachable")

    seen = asyncio.run(write_and_hear_the_event())
    made, event = seen["made"], seen["event"]
    assert event["type"] == "outdial_created"
    assert event["data"]["customer_id"] == str(customer)
    status, body = http(port, f"/v1.0/outdials/{made['id']}", token)
    assert (status, body["name"]) == (200, "made over HTTP"), body
    assert http(port, "/readyz") == (200, {"status": "ready"})
    # deploy/README.md's one-off `outdial replay --check`, locked down as well,
    # beside the running components: the read model the commands wrote is the
    # one the events make.
    check = podman(
        engine, "run", "--rm", *LOCKED_DOWN, *env, f"--network={NETWORK}", "--no-healthcheck",
        image, "outdial", "replay", "--check",
        check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.rstrip().endswith(": equal"), check.stdout

    for name in names.values():
        code, took = stop(engine, name)
        assert code == 0, podman(engine, "logs", name).stderr
        assert took < 20


def test_a_read_only_query_server_without_a_jwt_secret_says_why_it_cannot_start(
    engine: dict[str, str], image: str, schema_url: str
) -> None:
    result = podman(
        engine, "run", "--rm", *LOCKED_DOWN, "--network=none", "--no-healthcheck",
        f"--env=OUTDIAL_DATABASE_URL={from_a_container(schema_url)}",
        image, "outdial", "query",
        check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("outdial:")]
    assert lines == [
        "outdial: OUTDIAL_VAR_DIR: cannot write the JWT secret in /var/lib/outdial/var: "
        "Read-only file system"
    ], result.stderr


# --- compose.yaml -------------------------------------------------------------


@pytest.fixture(scope="module")
def stand_ins(
    engine: dict[str, str], image: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The stand-in images by service, built on the Debian-made base (cached)."""
    built = {}
    for service, (tag, containerfile) in STAND_INS.items():
        context = tmp_path_factory.mktemp(service)
        (context / "Containerfile").write_text(containerfile.format(base=BASE_IMAGE))
        if service == "postgres":
            (context / "entrypoint").write_text(POSTGRES_ENTRYPOINT)
            (context / "entrypoint").chmod(0o755)
        build(engine, tag, str(context))
        built[service] = tag
    return built


def compose_for_this_machine(stand_ins: dict[str, str], ports: list[int]) -> dict[str, Any]:
    """deploy/compose.yaml with only what this machine needs changed: the stand-in
    images, the image built above instead of a build of its own (its base cannot
    be pulled), the query servers on free host ports, and RabbitMQ's ports not
    published (this machine's own broker holds 127.0.0.1:5672)."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    for name, tag in stand_ins.items():
        services[name]["image"] = tag
    del services["rabbitmq"]["ports"]
    free = iter(ports)
    for service in services.values():
        if service["image"].partition(":")[0] == "outdial":
            service["image"] = IMAGE
            del service["build"]
            if "ports" in service:
                (mapping,) = service["ports"]
                address, _, inside = mapping.split(":")
                service["ports"] = [f"{address}:{next(free)}:{inside}"]
    return compose


def test_the_compose_file_runs_with_podman_compose(
    engine: dict[str, str],
    image: str,
    stand_ins: dict[str, str],
    tmp_path: Path,
) -> None:
    """The README's compose walk: every component on one PostgreSQL store, the
    query servers healthy and sharing the JWT secret, each stopping with 0."""
    tool = shutil.which("podman-compose")
    if tool is None:
        pytest.skip("podman-compose is not installed (apt-get install podman-compose)")
    ports = [free_port(), free_port()]
    compose = compose_for_this_machine(stand_ins, ports)
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(compose, sort_keys=False))
    # The README's deploy/.env; podman-compose 1.0.3 reads the .env beside the file.
    (tmp_path / ".env").write_text(
        f"OUTDIAL_JWT_SECRET={secrets.token_hex(32)}\n"
        f"POSTGRES_PASSWORD={secrets.token_hex(16)}\n"
        f"RABBITMQ_PASSWORD={secrets.token_hex(16)}\n"
    )
    project = f"outdial-test-{RUN}"

    def compose_run(*args: str, timeout: float = 180) -> None:
        done = subprocess.run(
            [tool, "-p", project, "-f", str(tmp_path / "compose.yaml"), *args],
            env=engine,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    def container(service: str) -> str:
        return f"{project}_{service}_1"

    def healthy(name: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while podman(engine, "healthcheck", "run", name, check=False).returncode != 0:
            assert time.monotonic() < deadline, podman(engine, "logs", name, check=False)
            time.sleep(0.5)

    outdials = [n for n, s in compose["services"].items() if s["image"] == IMAGE]
    try:
        # podman-compose 1.0.3 starts services in order but does not wait for
        # `condition: service_healthy`: start the servers first and wait for
        # compose.yaml's own health checks, as docker compose would.
        compose_run("up", "-d", "rabbitmq", "postgres")
        for server in ("rabbitmq", "postgres"):
            healthy(container(server))
        compose_run("up", "-d")
        for port, query in zip(ports, ("query-1", "query-2"), strict=True):
            wait_healthy(engine, container(query), port)
        for service in outdials:
            name = container(service)
            wait_for_log(engine, name, '"msg":"ready"')
            assert process_uid(engine, name) == UID
            inspected = podman(
                engine, "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name
            ).stdout.strip()
            assert inspected == "true", service

        customer = uuid.uuid4()
        token = podman(
            engine, "exec", container("query-1"), "outdial", "token", "--customer-id", str(customer)
        ).stdout.strip()
        status, made = http(
            ports[0], "/v1.0/outdials", token, {"name": "n", "detail": "", "data": ""}
        )
        assert status == 200, made
        # A token from query-1, good at query-2: the secret is shared.
        status, body = http(ports[1], f"/v1.0/outdials/{made['id']}", token)
        assert (status, body["name"]) == (200, "n"), body
        for port in ports:
            assert http(port, "/readyz") == (200, {"status": "ready"})
        rabbitmqctl = ["exec", container("rabbitmq"), "rabbitmqctl", "-q"]
        queues = podman(engine, *rabbitmqctl, "list_queues", "name", "consumers").stdout
        consumers = dict(line.split("\t") for line in queues.splitlines()[1:])
        assert consumers["outdial.commands"] == "2"  # command-1 and command-2 compete
        exchanges = podman(engine, *rabbitmqctl, "list_exchanges", "name").stdout.split()
        assert {EVENT_EXCHANGE, "bin-manager.outdial-manager.event"} <= set(exchanges)

        for service in outdials:
            code, took = stop(engine, container(service))
            assert code == 0, (service, podman(engine, "logs", container(service)).stderr)
            assert took < 20, service
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            compose_run("down", "-v")
        label = f"label=io.podman.compose.project={project}"
        left = podman(engine, "ps", "-aq", "--filter", label, check=False).stdout.split()
        if left:
            podman(engine, "rm", "--force", "--time", "0", *left, check=False)
        podman(engine, "network", "rm", f"{project}_default", check=False)
        for volume in ("rabbitmq-data", "postgres-data"):
            podman(engine, "volume", "rm", "--force", f"{project}_{volume}", check=False)
