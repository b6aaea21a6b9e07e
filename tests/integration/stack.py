"""The whole service in this process, as `outdial run` wires it, for HTTP tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aiohttp

from services import bootstrap
from shared import tokens
from shared.config import Settings
from tests.fixtures import AMQP_URL, purge_command_queues
from tests.integration.processes import free_port

SECRET = "integration-test-secret-of-at-least-32-bytes"


@dataclass
class Stack:
    rt: bootstrap.Runtime
    base: str
    http: aiohttp.ClientSession

    def token(self, customer: UUID | None = None) -> str:
        return tokens.mint(customer or uuid4(), SECRET)

    async def call(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, decoded JSON body, headers) of one request, token in the Bearer header."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(
            method, self.base + path, json=json, data=data, headers=all_headers
        ) as r:
            body = await r.read()
            decoded = None
            if r.content_type == "application/json":
                import orjson

                decoded = orjson.loads(body)
            return r.status, decoded, dict(r.headers)


@asynccontextmanager
async def running_stack(
    store_url: str, tmp_path: Path, names: list[str] | None = None
) -> AsyncIterator[Stack]:
    await purge_command_queues()
    port = free_port()
    settings = Settings(
        amqp_url=AMQP_URL,
        database_url=store_url,
        http_port=port,
        jwt_secret=SECRET,
        var_dir=tmp_path / "var",
    )
    rt = bootstrap.Runtime(settings)
    components = [
        bootstrap.COMPONENTS[name](rt)
        for name in names or ["command", "projector", "relay", "query"]
    ]
    started = []
    try:
        for component in components:
            await component.start()
            started.append(component)
        async with aiohttp.ClientSession() as http:
            yield Stack(rt, f"http://127.0.0.1:{port}", http)
    finally:
        for component in reversed(started):
            await component.stop()
        await rt.close()
