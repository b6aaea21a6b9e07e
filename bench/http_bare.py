"""The bare aiohttp handler: answers every GET with the same bytes as the route under test.

python -m bench.http_bare PORT BODY_FILE
prints "ready" once it listens.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web


async def serve(port: int, body: bytes) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()  # until killed


def main() -> None:
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2]).read_bytes()))


if __name__ == "__main__":
    main()
