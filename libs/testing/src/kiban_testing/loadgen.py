"""A lean HTTP/1.1 client for benches: keep-alive connections over asyncio streams.

Benches run the client on the same two cores as the server they measure. httpx spends a few
milliseconds of CPU per request on this machine, as much as the server it drives, so the rate
measured was partly the client's. This client writes the request bytes and reads a status line,
headers and a `Content-Length` body, and nothing more: enough for JSON APIs, not a general
client (no TLS, no chunked responses, no redirects).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping


class LoadClient:
    """`connections` keep-alive connections to one server, shared by concurrent callers."""

    def __init__(self, host: str, port: int, *, connections: int = 64) -> None:
        self.host, self.port = host, port
        self._size = connections
        self._idle: asyncio.LifoQueue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.LifoQueue()
        )
        self._open = 0

    async def request(
        self, method: str, path: str, *, body: bytes = b"", headers: Mapping[str, str] = {}
    ) -> tuple[int, bytes]:
        """Send one request; returns the status code and the body."""
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        reader, writer = await self._connection()
        try:
            writer.write(message)
            status, reply, keep = await _read_response(reader)
        except BaseException:
            writer.close()
            self._open -= 1
            raise
        if keep:
            self._idle.put_nowait((reader, writer))
        else:
            writer.close()
            self._open -= 1
        return status, reply

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._idle.empty() and self._open < self._size:
            self._open += 1
            try:
                return await asyncio.open_connection(self.host, self.port)
            except BaseException:
                self._open -= 1
                raise
        return await self._idle.get()

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()
        self._open = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            raise ValueError("chunked responses are not supported by the bench client")
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    return status, await reader.readexactly(length), keep
