"""`outdial`: the one console script (CONTRACT 7)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from uuid import UUID

from services import bootstrap, importer
from shared import tokens
from shared.config import Settings
from shared.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="outdial", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="every component in one process (the embedded default)")
    sub.add_parser("command", help="the command consumer alone")
    sub.add_parser("projector", help="the projection into the read model alone")
    sub.add_parser("relay", help="the event relay to outdial.events alone")
    sub.add_parser("query", help="the HTTP API alone")
    replay = sub.add_parser("replay", help="rebuild the read models from the event store")
    replay.add_argument(
        "--check",
        action="store_true",
        help="rebuild aside and report every difference from the live read model",
    )
    token = sub.add_parser("token", help="print a JWT for a customer, for trying the API")
    token.add_argument("--customer-id", type=UUID, required=True)
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default: a day)")
    load = sub.add_parser("import", help="bulk import of targets from CSV")
    load.add_argument("--customer-id", type=UUID, required=True)
    load.add_argument("--outdial-id", type=UUID, required=True)
    load.add_argument(
        "file", type=Path, help="columns: name, detail, data, destination_N_type, ..."
    )
    args = parser.parse_args(argv)

    settings = Settings()
    if args.command == "token":
        print(tokens.mint(args.customer_id, settings.secret, ttl_seconds=args.ttl))
        return 0

    if args.command == "import":
        return asyncio.run(
            importer.run(settings.amqp_url, args.customer_id, args.outdial_id, args.file)
        )

    configure_logging(settings.log_level)
    if args.command == "replay":
        return bootstrap.replay(settings, check=args.check)
    names = ["command", "projector", "relay", "query"] if args.command == "run" else [args.command]
    if "query" in names:
        settings.secret  # noqa: B018 - made on first start, so `outdial token` agrees with the API
    asyncio.run(bootstrap.serve(settings, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
