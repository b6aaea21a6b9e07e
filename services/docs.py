"""`python -m services.docs --write`: write the generated documents into docs/.

`docs/asyncapi.yaml` (the bus, the platform's envelope and events) and
`docs/openapi.json` (the HTTP API) are built from the code's pydantic models and
the table of operations; tests fail when a checked-in copy is stale.
Without `--write`, it only says which are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from services.gateway.envelope import route_summaries
from services.gateway.openapi import document as openapi_document
from shared import asyncapi

DOCS = Path(__file__).resolve().parents[1] / "docs"


def generated() -> dict[Path, str]:
    openapi = orjson.dumps(openapi_document(), option=orjson.OPT_INDENT_2).decode() + "\n"
    asyncapi_yaml = asyncapi.render(route_summaries())
    return {DOCS / "asyncapi.yaml": asyncapi_yaml, DOCS / "openapi.json": openapi}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.docs", description=__doc__)
    parser.add_argument("--write", action="store_true", help="write the stale documents")
    args = parser.parse_args(argv)
    stale = 0
    for path, text in generated().items():
        if path.exists() and path.read_text() == text:
            continue
        stale += 1
        if args.write:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
        else:
            print(f"stale: {path}")
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
