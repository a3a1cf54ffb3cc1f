"""Sending a callback to the address the SSRF guard checked (the send side of `ssrf`).

`post_pinned` resolves the host with `ssrf.resolve_checked` and connects to one of the
addresses that were checked, so a DNS answer that changes between the check and the connect
(rebinding) cannot redirect the request; TLS (SNI, the certificate's host name) and the Host
header still use the URL's name. httpx has no hook to pin an address, hence the small
httpcore backend and transport here.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpcore
import httpx

from kreaserve.outbound.ssrf import IPAddress, Resolver, parse_url, resolve_checked

__all__ = ["MAX_RESPONSE_BYTES", "post_pinned"]

#: At most this much of a receiver's answer body is read; the rest is dropped.
MAX_RESPONSE_BYTES = 64 * 1024


class _Deadline:
    """One total time limit; each network operation gets what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def clip(self, timeout: float | None, error: type[Exception]) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise error("callback time limit reached")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose reads, writes and TLS handshake end at the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.clip(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.clip(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = self._deadline.clip(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, timeout), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _PinnedBackend(httpcore.SyncBackend):
    """Connects to the checked addresses, in order, whatever host httpcore asks for; the
    host name still goes to TLS (SNI, certificate check) because httpcore passes it there."""

    def __init__(self, addresses: list[IPAddress], port: int, deadline: _Deadline) -> None:
        self._addresses = addresses
        self._port = port
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        error: Exception | None = None
        for address in self._addresses:
            try:
                stream = super().connect_tcp(
                    str(address),
                    self._port,
                    self._deadline.clip(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        assert error is not None
        raise error


_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
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
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


def _httpx_error(exc: Exception) -> Exception:
    for core, mapped in _EXCEPTIONS:
        if isinstance(exc, core):
            return mapped(str(exc))
    return exc


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except Exception as exc:
            raise _httpx_error(exc) from exc

    def close(self) -> None:
        self._stream.close()


class _PinnedTransport(httpx.BaseTransport):
    """An httpx transport over an httpcore pool that uses the pinned backend (no proxy)."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        # httpx's own default context: certifi, or SSL_CERT_FILE / SSL_CERT_DIR when set.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            network_backend=backend,
            max_connections=1,
            http1=True,
            http2=False,
            retries=0,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = self._pool.handle_request(core_request)
        except Exception as exc:
            raise _httpx_error(exc) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


_DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})


def post_pinned(
    url: str,
    content: bytes,
    headers: Mapping[str, str],
    timeout: float = 10.0,
    allow_hosts: frozenset[str] = frozenset(),
    resolver: Resolver = socket.getaddrinfo,
) -> httpx.Response:
    """POST `content` to `url` after the send-time check, connected to the checked address.

    Raises UnsafeURLError (the URL or what its host resolves to is refused) or an
    httpx.HTTPError (httpx.TimeoutException when the attempt takes longer than `timeout`
    seconds in total: connect, TLS, sending and the answer). A redirect is returned as it
    is, never followed. The returned response holds at most MAX_RESPONSE_BYTES of the
    answer's body, as received (requests ask for `Accept-Encoding: identity`). A Host header
    in `headers` is ignored: the Host header is always the URL's."""
    deadline = _Deadline(timeout)
    parsed = parse_url(url)
    addresses = resolve_checked(parsed.host, parsed.port, allow_hosts, resolver)
    sent_headers = {"accept-encoding": "identity"}
    sent_headers.update((k, v) for k, v in headers.items() if k.lower() != "host")
    transport = _PinnedTransport(_PinnedBackend(addresses, parsed.port, deadline))
    with httpx.Client(
        transport=transport, trust_env=False, follow_redirects=False, timeout=httpx.Timeout(timeout)
    ) as client:
        request = client.build_request("POST", parsed.url(), content=content, headers=sent_headers)
        response = client.send(request, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_raw():
                body += chunk[: MAX_RESPONSE_BYTES - len(body)]
                if len(body) >= MAX_RESPONSE_BYTES:
                    break
        finally:
            response.close()
    kept = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in _DROPPED_RESPONSE_HEADERS
    ]
    return httpx.Response(response.status_code, headers=kept, content=bytes(body), request=request)
