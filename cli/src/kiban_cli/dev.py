"""`kiban dev`: all six services in one process and one event loop, on the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import uvicorn

from kiban_cli.services import SERVICES
from kiban_common.bus import MemoryBroker
from kiban_common.devstate import dev_overrides
from kiban_common.settings import load_settings


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal capture: with six servers in one loop the
    last one to install a handler would be the only one to hear Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_servers(state: Path, host: str, names: list[str] | None = None) -> list[_Server]:
    broker = MemoryBroker()
    servers = []
    for name in names or list(SERVICES):
        service = SERVICES[name]
        settings = load_settings(
            service.settings,
            **dev_overrides(state, name, service.port, host, service.definition.zone),
        )
        app = service.create_app(settings, broker=broker)
        config = uvicorn.Config(
            app,
            host=host,
            port=service.port,
            log_level="warning",
            lifespan="on",
            log_config=None,
        )
        servers.append(_Server(config))
    return servers


async def serve_all(servers: list[_Server], *, on_ready: Callable[[], None] | None = None) -> None:
    loop = asyncio.get_running_loop()

    def shutdown() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown)
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    try:
        if on_ready is not None:
            await wait_ready(servers, tasks)
            on_ready()
        await asyncio.gather(*tasks)
    finally:
        shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


class StartupFailed(RuntimeError):
    pass


async def wait_ready(
    servers: list[_Server], tasks: list[asyncio.Task[None]], within: float = 60
) -> None:
    """Until every server answers `/readyz` 200; a server that exits first is a failed start."""
    async with httpx.AsyncClient(timeout=2) as client, asyncio.timeout(within):
        for server, task in zip(servers, tasks, strict=True):
            url = f"http://{server.config.host}:{server.config.port}/readyz"
            while True:
                if task.done():
                    raise StartupFailed(f"the service on port {server.config.port} did not start")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(url)).status_code == 200:
                        break
                await asyncio.sleep(0.1)
