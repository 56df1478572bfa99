"""The benches' lean HTTP client against a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from kiban_testing import eventually, free_port
from kiban_testing.loadgen import LoadClient


async def _started(server: uvicorn.Server) -> bool:
    return server.started


@pytest.fixture
async def server() -> AsyncIterator[int]:
    app = FastAPI()

    @app.post("/echo", status_code=201)
    async def echo(request: Request) -> dict[str, object]:
        return {"got": json.loads(await request.body()), "auth": request.headers.get("x-token")}

    @app.get("/bye")
    async def bye() -> Response:
        return Response("bye", headers={"Connection": "close"})

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), until=bool, timeout=10)
    yield port
    server.should_exit = True
    await task


async def test_requests_share_keep_alive_connections_and_return_status_and_body(
    server: int,
) -> None:
    client = LoadClient("127.0.0.1", server, connections=4)
    try:
        results = await asyncio.gather(
            *(
                client.request(
                    "POST", "/echo", body=json.dumps({"n": n}).encode(), headers={"X-Token": "t"}
                )
                for n in range(40)
            )
        )
    finally:
        await client.close()
    assert [status for status, _ in results] == [201] * 40
    assert sorted(json.loads(body)["got"]["n"] for _, body in results) == list(range(40))
    assert {json.loads(body)["auth"] for _, body in results} == {"t"}


async def test_unknown_path_and_closed_connections_are_handled(server: int) -> None:
    client = LoadClient("127.0.0.1", server, connections=1)
    try:
        status, _ = await client.request("GET", "/nowhere")
        assert status == 404
        assert await client.request("GET", "/bye") == (200, b"bye")
        # the server closed that connection; the next request opens a new one
        status, _ = await client.request("POST", "/echo", body=b"{}")
        assert status == 201
    finally:
        await client.close()
