"""An httpx transport whose sockets are plain asyncio protocols (swap it like any transport).

httpx's default network backend runs every socket read through anyio: a cancel scope and a
timer for the read timeout, plus resuming and pausing the transport's reading (two epoll
changes) per read; at one SSE event per read that was most of the model client's CPU per
reply. `_LoopBackend` is an httpcore network backend (httpcore's documented extension point)
on a plain asyncio protocol that keeps reading, buffers what arrives (pausing the socket
only past a high-water mark) and times a read out with one loop timer. `LoopTransport` is
httpx's default transport (HTTP/1.1, TLS verified as httpx does) over an httpcore pool that
uses it. Measured with `python -m bench.client`: CPU per streamed 200-token reply 113 -> 84
ms (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, cast

import httpcore
import httpx

READ_HIGH_WATER = 1 << 20  # bytes buffered before the socket stops being read
READ_LOW_WATER = 1 << 16


def _expire(waiter: asyncio.Future[None], error: type[Exception]) -> None:
    if not waiter.done():
        waiter.set_exception(error())


class _LoopStream(asyncio.Protocol, httpcore.AsyncNetworkStream):
    """An httpcore network stream on an asyncio transport."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._eof = False
        self._error: Exception | None = None
        self._lost = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._read_deadline = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._writing_paused = False
        self._write_waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > READ_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._error = exc
        self._wake()
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake()

    def _wake(self) -> None:
        for waiter in (self._read_waiter, self._write_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # httpcore.AsyncNetworkStream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        chunks = self._chunks
        if not chunks:
            if self._eof:
                return self._end_of_stream()
            waiter = self._read_waiter = self._loop.create_future()
            if timeout is not None:
                self._arm_read_timer(self._loop.time() + timeout)
            try:
                await waiter
            finally:
                self._read_waiter = None
            if not chunks:
                return self._end_of_stream()
        data = chunks.popleft()
        if chunks and len(data) < max_bytes:  # hand over what has piled up in one go
            parts = [data]
            size = len(data)
            while chunks and size + len(chunks[0]) <= max_bytes:
                size += len(chunks[0])
                parts.append(chunks.popleft())
            data = b"".join(parts)
        if len(data) > max_bytes:
            chunks.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        self._buffered -= len(data)
        if self._reading_paused and self._buffered <= READ_LOW_WATER and not self._lost:
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()
        return data

    # A read's timeout is a deadline, checked by one timer per connection that is moved only
    # when it fires early (the read it was set for has finished), instead of a timer set and
    # cancelled for every read: reads come once per SSE event.

    def _arm_read_timer(self, deadline: float) -> None:
        self._read_deadline = deadline
        timer = self._read_timer
        if timer is not None:
            if timer.when() <= deadline:
                return  # fires first; moves itself on
            timer.cancel()
        self._read_timer = self._loop.call_at(deadline, self._check_read_deadline)

    def _check_read_deadline(self) -> None:
        self._read_timer = None
        waiter = self._read_waiter
        if waiter is None or waiter.done():
            return  # no read waiting: the next one sets the timer again
        if self._loop.time() >= self._read_deadline - 0.001:  # the loop may run timers early
            waiter.set_exception(httpcore.ReadTimeout())
        else:
            self._read_timer = self._loop.call_at(self._read_deadline, self._check_read_deadline)

    def _end_of_stream(self) -> bytes:
        if self._error is not None:
            raise httpcore.ReadError(str(self._error) or type(self._error).__name__)
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        if self._lost or self._transport is None or self._transport.is_closing():
            raise httpcore.WriteError(str(self._error or "connection closed"))
        self._transport.write(buffer)
        while self._writing_paused and not self._lost:
            waiter = self._write_waiter = self._loop.create_future()
            timer = (
                None
                if timeout is None
                else self._loop.call_later(timeout, _expire, waiter, httpcore.WriteTimeout)
            )
            try:
                await waiter
            finally:
                self._write_waiter = None
                if timer is not None:
                    timer.cancel()
        if self._lost and self._error is not None:
            raise httpcore.WriteError(str(self._error) or type(self._error).__name__)

    async def aclose(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        transport = self._transport
        assert transport is not None
        try:
            async with asyncio.timeout(timeout):
                upgraded = await self._loop.start_tls(
                    transport, self, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            transport.abort()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as error:
            transport.abort()
            raise httpcore.ConnectError(str(error) or type(error).__name__) from None
        if upgraded is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("connection closed during the TLS handshake")
        self._transport = upgraded
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection the server closed (or wrote to)
            return self._eof or bool(self._chunks)
        if self._transport is None:
            return None
        key = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        if key not in ("ssl_object", "sockname", "peername", "socket"):
            return None
        return self._transport.get_extra_info(key)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _LoopBackend(httpcore.AsyncNetworkBackend):
    """Connects `_LoopStream`s; Unix sockets are left to httpcore's anyio backend."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, stream = await loop.create_connection(
                    lambda: _LoopStream(loop),
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                    # Names may resolve to several addresses: race them as anyio does (RFC
                    # 8305). An IP literal has one, and the race would cost a task per connect.
                    happy_eyeballs_delay=None if _is_ip_literal(host) else 0.25,
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as error:
            raise httpcore.ConnectError(str(error) or type(error).__name__) from None
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return stream

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await httpcore.AnyIOBackend().connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


_HTTPCORE_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    # most specific first
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


def _httpx_error(error: Exception) -> httpx.HTTPError | None:
    """The httpx exception for an httpcore one, as httpx's own transport maps them."""
    for source, target in _HTTPCORE_ERRORS:
        if isinstance(error, source):
            return target(str(error))
    return None


class _BodyStream(httpx.AsyncByteStream):
    def __init__(self, body: AsyncIterable[bytes]) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._body:
                yield part
        except Exception as error:
            mapped = _httpx_error(error)
            if mapped is None:
                raise
            raise mapped from error

    async def aclose(self) -> None:
        aclose = getattr(self._body, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception as error:
                mapped = _httpx_error(error)
                if mapped is None:
                    raise
                raise mapped from error


class LoopTransport(httpx.AsyncBaseTransport):
    """httpx's default transport (HTTP/1.1, TLS verified as httpx does) on `_LoopBackend`."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_LoopBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core_request)
        except Exception as error:
            mapped = _httpx_error(error)
            if mapped is None:
                raise
            raise mapped from error
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_BodyStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
