"""The mistakes a user makes at start end in one line that names the setting and the
cause, and exit status 1 (CONTRACT 7); no traceback unless OUTDIAL_LOG_LEVEL=debug.

Each case runs the real `outdial` console script, as a user would."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.bootstrap import Runtime
from services.query import replay
from services.store import Busy, connect_postgres, parse_store_url, replay_lock
from shared.config import Settings
from tests.conftest import postgres_url
from tests.fixtures import AMQP_URL, SECRET
from tests.integration.processes import OUTDIAL, free_port

pytestmark = pytest.mark.integration

CUSTOMER = "5e4a0680-804e-11ec-8477-2fea5968d85b"


def outdial(cwd: Path, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    """`outdial ARGS` in `cwd`, with working settings but those of `env` (None: unset)."""
    settings = {
        "OUTDIAL_AMQP_URL": AMQP_URL,
        "OUTDIAL_DATABASE_URL": f"sqlite:///{cwd}/var/outdial.sqlite3",
        "OUTDIAL_JWT_SECRET": SECRET,
        "OUTDIAL_HTTP_PORT": str(free_port()),
        **env,
    }
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")}
    environment |= {k: v for k, v in settings.items() if v is not None}
    return subprocess.run(
        [OUTDIAL, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def closed_port() -> int:
    return free_port()  # bound a moment ago and released: nothing listens there


@pytest.mark.parametrize(
    "args", [["run"], ["command"], ["relay"], ["query"], ["dead-letters", "list"]]
)
def test_the_broker_unreachable(tmp_path: Path, args: list[str]) -> None:
    port = closed_port()
    line = one_line(
        outdial(tmp_path, *args, OUTDIAL_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{port}/")
    )
    assert line.startswith("outdial: OUTDIAL_AMQP_URL: cannot reach the broker at "), line
    assert f"127.0.0.1:{port}" in line


def test_an_unknown_vhost_a_wrong_password_and_a_bad_url(tmp_path: Path) -> None:
    line = one_line(
        outdial(tmp_path, "command", OUTDIAL_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/nope")
    )
    assert "OUTDIAL_AMQP_URL" in line and "virtual host 'nope'" in line, line
    line = one_line(
        outdial(tmp_path, "command", OUTDIAL_AMQP_URL="amqp://guest:wrong@127.0.0.1:5672/")
    )
    assert "OUTDIAL_AMQP_URL" in line and "refused the user 'guest'" in line, line
    line = one_line(outdial(tmp_path, "command", OUTDIAL_AMQP_URL="http://127.0.0.1/"))
    assert "OUTDIAL_AMQP_URL: must start with amqp://" in line, line


def test_a_bad_or_unreachable_database(tmp_path: Path) -> None:
    line = one_line(outdial(tmp_path, "run", OUTDIAL_DATABASE_URL="mysql://x/y"))
    assert line.startswith("outdial: OUTDIAL_DATABASE_URL: must start with sqlite:///"), line
    port = closed_port()
    line = one_line(
        outdial(
            tmp_path, "command", OUTDIAL_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/x"
        )
    )
    assert line.startswith("outdial: OUTDIAL_DATABASE_URL: cannot use the PostgreSQL"), line
    assert f"127.0.0.1:{port}" in line
    missing = postgres_url().rsplit("/", 1)[0] + f"/no_such_db_{uuid.uuid4().hex[:8]}"
    line = one_line(outdial(tmp_path, "query", OUTDIAL_DATABASE_URL=missing))
    assert "OUTDIAL_DATABASE_URL" in line and "does not exist" in line, line


def test_an_unwritable_database_directory_and_var_directory(tmp_path: Path) -> None:
    # As root no permission bit stops a write; a file where a folder must be does.
    (tmp_path / "a-file").write_text("")
    line = one_line(
        outdial(tmp_path, "run", OUTDIAL_DATABASE_URL=f"sqlite:///{tmp_path}/a-file/x.sqlite3")
    )
    assert line.startswith("outdial: OUTDIAL_DATABASE_URL: cannot create "), line
    assert "a-file" in line
    # The JWT secret is kept in the var directory when none is set.
    var = tmp_path / "a-file" / "var"
    line = one_line(outdial(tmp_path, "run", OUTDIAL_VAR_DIR=str(var), OUTDIAL_JWT_SECRET=None))
    assert line.startswith(f"outdial: OUTDIAL_VAR_DIR: cannot write the JWT secret in {var}"), line


def test_the_http_port_in_use_is_said_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = outdial(tmp_path, "run", OUTDIAL_HTTP_PORT=str(port))
    assert one_line(result) == f"outdial: OUTDIAL_HTTP_PORT: 127.0.0.1:{port} is in use"
    assert "consuming" not in result.stdout + result.stderr


def test_bad_values_of_settings(tmp_path: Path) -> None:
    line = one_line(outdial(tmp_path, "run", OUTDIAL_HTTP_PORT="eighty"))
    assert line.startswith("outdial: OUTDIAL_HTTP_PORT: "), line
    line = one_line(outdial(tmp_path, "run", OUTDIAL_JWT_SECRET="short"))
    assert line == "outdial: OUTDIAL_JWT_SECRET: shorter than 32 bytes"
    line = one_line(outdial(tmp_path, "run", OUTDIAL_HTTP_HOST="no.such.host.invalid"))
    assert line.startswith("outdial: OUTDIAL_HTTP_HOST: cannot listen on no.such.host.invalid"), (
        line
    )
    # Out of range, each named: not the host's error, nor a traceback from deep inside.
    for setting, value in [
        ("OUTDIAL_HTTP_PORT", "99999"),
        ("OUTDIAL_HTTP_PORT", "-1"),
        ("OUTDIAL_PREFETCH", "-5"),
        ("OUTDIAL_PREFETCH", "70000"),
    ]:
        line = one_line(outdial(tmp_path, "run", **{setting: value}))
        assert line.startswith(f"outdial: {setting}: Input should be "), line
    line = one_line(outdial(tmp_path, "run", OUTDIAL_LOG_LEVEL="bogus"))
    assert line.startswith("outdial: OUTDIAL_LOG_LEVEL: must be one of DEBUG, INFO,"), line


@pytest.mark.parametrize(
    ("query", "said"),
    [
        (":notaport/test", "the PostgreSQL URL's port is not a number"),
        ("/test?pool_size=abc", "pool_size must be a whole number from 1 to 1000: 'abc'"),
        ("/test?pool_size=0", "pool_size must be a whole number from 1 to 1000: '0'"),
        ("/test?schema=bad-name;drop", "schema must be letters, digits and _"),
    ],
)
def test_a_bad_postgresql_url(tmp_path: Path, query: str, said: str) -> None:
    url = f"postgresql://postgres@127.0.0.1{query}"
    line = one_line(outdial(tmp_path, "command", OUTDIAL_DATABASE_URL=url))
    assert line.startswith(f"outdial: OUTDIAL_DATABASE_URL: {said}"), line


@pytest.mark.skipif(
    shutil.which("chattr") is None or os.geteuid() != 0, reason="needs chattr, as root"
)
def test_a_store_that_cannot_be_written(tmp_path: Path) -> None:
    """A store SQLite can only read (here immutable: a read-only mount is the same to
    it) is said at start; SQLite itself would open it read-only without a word, and
    every command would be requeued for ever."""
    store = tmp_path / "var" / "outdial.sqlite3"
    Runtime(Settings(database_url=f"sqlite:///{store}", jwt_secret=SECRET)).app  # noqa: B018
    files = [str(f) for f in (store, store.with_name(store.name + "-wal")) if f.exists()]
    subprocess.run(["chattr", "+i", *files], check=True)
    try:
        line = one_line(outdial(tmp_path, "run"))
    finally:
        subprocess.run(["chattr", "-i", *files], check=True)
    assert line == (
        f"outdial: OUTDIAL_DATABASE_URL: cannot write {store}: "
        "not writable (a read-only mount or an immutable file?)"
    )
    # Once writable again, the same store is whole.
    checked = outdial(tmp_path, "replay", "--check")
    assert checked.returncode == 0 and "equal" in checked.stdout, checked


def test_a_replay_while_another_runs_says_so_and_leaves_it_alone(
    tmp_path: Path, store_url: str
) -> None:
    """Two replays at once would drop or fill each other's scratch tables, and a
    rebuild could swap in a half-filled read model: while one holds the store's
    replay lock (here this test, as a replay in another process holds it), a
    second `outdial replay`, or `--check`, says so in one line and exits 1,
    touching nothing. The lock is the store's: another store's replay runs."""
    store = parse_store_url(store_url)
    Runtime(Settings(database_url=store_url, jwt_secret=SECRET)).app.close()
    with replay_lock(store, wait=False):
        for args in (["replay"], ["replay", "--check"]):
            line = one_line(outdial(tmp_path, *args, OUTDIAL_DATABASE_URL=store_url))
            assert line == (
                "outdial: OUTDIAL_DATABASE_URL: another outdial replay (or replay --check) "
                "is running on this store; run this one once it has finished"
            ), line
        with pytest.raises(Busy), replay_lock(store, wait=False):
            pass
        with _another_store(store_url) as other_url:
            other = outdial(tmp_path, "replay", OUTDIAL_DATABASE_URL=other_url)
        assert other.returncode == 0 and "; it is live" in other.stderr, other.stderr
    done = outdial(tmp_path, "replay", OUTDIAL_DATABASE_URL=store_url)
    assert done.returncode == 0 and "; it is live" in done.stderr, done.stderr


def test_a_rebuild_that_may_wait_for_another_says_so_and_waits(store_url: str) -> None:
    """A rebuild at start (or the keeper's) waits for a replay in another process,
    after saying so: it is not refused, and does not look hung."""
    store = parse_store_url(store_url)
    app = Runtime(Settings(database_url=store_url, jwt_secret=SECRET)).app
    out = io.StringIO()
    rebuilding = threading.Thread(target=lambda: replay.rebuild(app, out=out))
    try:
        with replay_lock(store, wait=False):
            rebuilding.start()
            deadline = time.monotonic() + 30
            while "waiting for it to finish" not in out.getvalue():
                assert time.monotonic() < deadline, out.getvalue()
                time.sleep(0.01)
            rebuilding.join(0.5)
            assert rebuilding.is_alive() and "it is live" not in out.getvalue()
        rebuilding.join(30)
        assert not rebuilding.is_alive() and "; it is live" in out.getvalue(), out.getvalue()
    finally:
        if rebuilding.is_alive():
            rebuilding.join(30)  # before its store is closed under it
        app.close()


@contextlib.contextmanager
def _another_store(store_url: str) -> Iterator[str]:
    """A store beside `store_url`'s: a file beside it, or a schema in its database."""
    if store_url.startswith("sqlite"):
        yield store_url.replace("outdial.sqlite3", "other.sqlite3")
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{postgres_url()}?schema={schema}"
    finally:
        with connect_postgres(parse_store_url(postgres_url())) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_traceback_with_debug_logging(tmp_path: Path) -> None:
    result = outdial(tmp_path, "run", OUTDIAL_DATABASE_URL="mysql://x/y", OUTDIAL_LOG_LEVEL="debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("outdial: OUTDIAL_DATABASE_URL:")


def test_token_never_makes_a_secret(tmp_path: Path) -> None:
    """`outdial token` where no service runs: it says where the secret is looked
    for, and makes none (a token signed with a new secret would only be refused)."""
    line = one_line(outdial(tmp_path, "token", "--customer-id", CUSTOMER, OUTDIAL_JWT_SECRET=None))
    assert line.startswith(
        "outdial: OUTDIAL_JWT_SECRET: not set, and there is no var/jwt.secret"
    ), line
    assert not (tmp_path / "var").exists()


def test_import_failing_at_start_exits_2_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(
        "name,destination_0_type,destination_0_target\na,tel,+15559876543\n"
    )
    result = outdial(
        tmp_path,
        "import",
        "--customer-id",
        CUSTOMER,
        "--outdial-id",
        str(uuid.uuid4()),
        "t.csv",
        OUTDIAL_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/nope",
    )
    line = one_line(result, status=2)
    assert "OUTDIAL_AMQP_URL" in line and "virtual host 'nope'" in line, line


def test_help_and_version(tmp_path: Path) -> None:
    result = outdial(tmp_path, "--help")
    assert result.returncode == 0
    assert "CONTRACT" not in result.stdout
    for setting in ("OUTDIAL_AMQP_URL", "OUTDIAL_DATABASE_URL", "OUTDIAL_HTTP_HOST"):
        assert setting in result.stdout
    assert "envelope" in outdial(tmp_path, "query", "--help").stdout
    version = outdial(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("outdial ")
