"""outdial: event-sourced outbound-dialing lists and targets, commanded over RabbitMQ."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import sys
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from services import bootstrap, importer
from shared import tokens
from shared.commands import plain
from shared.config import SettingError, Settings
from shared.logs import configure_logging

M_ARENA_MAX = -8  # glibc's mallopt parameter


def fewer_malloc_arenas() -> None:
    """Let glibc's malloc keep two arenas, not eight per core.

    Each thread that allocates gets an arena of its own (the consumer's writer,
    the relay, the HTTP reads), and freed memory stays in the arena it came
    from, so resident memory creeps up with the number of threads rather than
    with the work. Two arenas cost these few threads nothing measurable.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)


def _settings_help() -> str:
    lines = ["settings (environment variables):"]
    for name, field in Settings.model_fields.items():
        default = "none" if field.default is None else str(field.default)
        if isinstance(field.default, Path) and not field.default.is_absolute():
            default = f"./{default}"
        lines.append(f"  OUTDIAL_{name.upper():<16} default: {default}")
    lines.append(
        "  (OUTDIAL_JWT_SECRET: none means a random one kept in OUTDIAL_VAR_DIR/jwt.secret)"
    )
    return "\n".join(lines)


def _version() -> str:
    try:
        return metadata.version("outdial")
    except metadata.PackageNotFoundError:
        return "unknown"


def _command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose help is its description too, for `outdial NAME --help`."""
    return sub.add_parser(name, help=help, description=help)  # type: ignore[no-any-return]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="outdial",
        description=__doc__,
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"outdial {_version()}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(
        sub,
        "run",
        help="every component in one process: the command consumer, the relay, the HTTP "
        "API and the platform's envelope listener (the embedded default)",
    )
    _command(sub, "command", help="the command consumer alone (outdial.commands)")
    _command(
        sub,
        "projector",
        help="the read model's keeper alone: commands write the read model themselves; "
        "this brings an old or missing one up to the events and checks it stays so",
    )
    _command(sub, "relay", help="the relay of stored events to RabbitMQ alone")
    _command(
        sub,
        "query",
        help="the HTTP API and the platform's envelope listener "
        "(bin-manager.outdial-manager.request)",
    )
    replay = _command(sub, "replay", help="rebuild the read model from the event store")
    replay.add_argument(
        "--check",
        action="store_true",
        help="rebuild aside and report every difference from the live read model",
    )
    dead = _command(
        sub, "dead-letters", help="list or replay the commands on outdial.commands.dead"
    )
    dead_sub = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    dead_list = _command(
        dead_sub,
        "list",
        help="one line each: message_id, customer, type, error, time; none is removed",
    )
    dead_list.add_argument("--json", action="store_true", help="a JSON array, with every field")
    dead_replay = _command(
        dead_sub,
        "replay",
        help="send them back to outdial.commands as first sent; each leaves the dead queue "
        "once the broker has confirmed its copy",
    )
    dead_replay.add_argument(
        "--message-id",
        action="append",
        dest="message_ids",
        metavar="ID",
        help="only this one (repeat for more); by default all",
    )
    token = _command(
        sub,
        "token",
        help="print a JWT for a customer, for trying the API (signed with the secret the "
        "service uses; never makes one)",
    )
    token.add_argument("--customer-id", type=UUID, required=True)
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default: a day)")
    load = _command(sub, "import", help="bulk import of targets from CSV")
    load.add_argument("--customer-id", type=UUID, required=True)
    load.add_argument("--outdial-id", type=UUID, required=True)
    load.add_argument(
        "file", type=Path, help="columns: name, detail, data, destination_N_type, ..."
    )
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    debug = False
    try:
        settings = Settings()
        debug = settings.log_level.lower() == "debug"
        return _run(args, settings)
    except ValidationError as e:
        error = e.errors(include_url=False)[0]
        setting = "OUTDIAL_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
        # A validator's own words, as a command's invalid fields are told.
        return _failed(f"{setting}: {plain(str(error['msg']))}", e, debug)
    except SettingError as e:
        return _failed(str(e), e, debug, status=2 if args.command == "import" else 1)


def _failed(line: str, error: BaseException, debug: bool, *, status: int = 1) -> int:
    """One line on stderr that names the setting and the cause; the traceback too
    with OUTDIAL_LOG_LEVEL=debug."""
    if debug:
        traceback.print_exception(error)
    print(f"outdial: {line}", file=sys.stderr)
    return status


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "token":
        secret = settings.existing_secret()
        print(tokens.mint(args.customer_id, secret, ttl_seconds=args.ttl))
        return 0
    if args.command == "import":
        return asyncio.run(
            importer.run(settings.amqp_url, args.customer_id, args.outdial_id, args.file)
        )
    if args.command == "dead-letters":
        return dead_letters(settings, args)
    configure_logging(settings.log_level)
    if args.command == "replay":
        return bootstrap.replay(settings, check=args.check)
    fewer_malloc_arenas()  # before any thread starts
    names = ["command", "projector", "relay", "query"] if args.command == "run" else [args.command]
    if "query" in names:
        settings.secret  # noqa: B018 - made on first start, so `outdial token` agrees with the API
    asyncio.run(bootstrap.serve(settings, names))
    return 0


def dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    """`outdial dead-letters list|replay`; 1 when a named message is not there."""
    from services import dead_letters as dead
    from shared.bus import COMMAND_QUEUE, DEAD_LETTER_QUEUE

    logging.basicConfig(level=logging.WARNING, format="outdial: %(message)s")
    if args.action == "list":
        found = asyncio.run(dead.list_dead_letters(settings.amqp_url))
        if args.json:
            print(json.dumps([letter.as_json() for letter in found], indent=2))
        else:
            for letter in found:
                print(letter.line())
        if not found:
            print(f"{DEAD_LETTER_QUEUE} is empty", file=sys.stderr)
        return 0
    wanted = set(args.message_ids or [])
    replayed = asyncio.run(
        dead.replay(settings.amqp_url, lambda d: not wanted or d.message_id in wanted)
    )
    for letter in replayed:
        print(f"replayed\t{letter.line()}")
    missing = wanted - {letter.message_id for letter in replayed}
    for message_id in sorted(missing):
        print(f"not in {DEAD_LETTER_QUEUE}: {message_id}", file=sys.stderr)
    print(f"{len(replayed)} replayed to {COMMAND_QUEUE}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
