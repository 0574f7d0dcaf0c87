"""HTTP clients for addresses a tenant chose: a PSA URL, a zone its PSA points at, an AI server.

Every request made through `send` has a wall-clock deadline for the whole exchange (connect,
TLS, request, headers and body) and a cap on the bytes of its answer: httpx's timeouts apply
per read, so a server that trickles one byte every few seconds would otherwise hold a worker
thread for ever. The deadline is enforced on the socket itself (each read and write waits at
most for what is left of it), and the body is streamed and abandoned past the cap.

An account admin types the PSA's URL, and Autotask's zone lookup answers with another one; a
worker then connects wherever they point. Unless the operator allows it
(`PSA_ALLOW_PRIVATE_ADDRESSES`), those connections may only reach public addresses: never
loopback, the private ranges, link-local (cloud metadata at 169.254.169.254) and the like. The
check is made on the addresses the name resolves to, at connect time, and the connection goes
to the address that was checked, so a DNS answer that changes in between (rebinding) cannot
slip through. TLS still verifies the certificate against the host name.
"""
from __future__ import annotations

import contextvars
import ipaddress
import logging
import math
import socket
import ssl
import threading
import time
import typing
from urllib.parse import urlsplit

import httpcore
import httpx

# httpx logs every request's full URL at INFO; a chat webhook's URL is its credential, and a
# PSA's may carry a tenant's names. Our own reasons say what failed without the URL.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class RefusedAddress(httpcore.ConnectError):
    """The host resolves to an address outbound connections may not reach. The message names
    the host and the address, for the operator's logs only: a reason a tenant can read must
    not (it would tell a tenant admin what internal names resolve to)."""


NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def is_public(address: str) -> bool:
    """A globally reachable unicast address; an IPv6 address that carries an IPv4 one
    (mapped, NAT64, 6to4, Teredo) is public only if that one is too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        carried = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if any(ip in prefix for prefix in NAT64_PREFIXES):
            carried.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(inner is not None and not is_public(str(inner)) for inner in carried):
            return False
        if ip.ipv4_mapped is not None:
            return True
    return ip.is_global and not ip.is_multicast


class PlainHttpRefused(httpx.UnsupportedProtocol):
    """An http:// URL while private addresses are refused: credentials and notes would cross
    the internet unencrypted."""


def refusal_for_url(url: str) -> str | None:
    """Why a URL can never be reached when private addresses are refused (plain http, a host
    that is a private address or a local name), without resolving anything; None if it may
    be."""
    if "://" in url and urlsplit(url).scheme.lower() == "http":
        return "the URL must use https"
    host = (urlsplit(url if "://" in url else "https://" + url).hostname or "").rstrip(".").lower()
    if not host:
        return "the URL has no host"
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return f"{host} is this machine"
    try:
        public = is_public(host)
    except ValueError:
        return None  # a name: checked when it is resolved
    return None if public else f"{host} is not a public address"


# the monotonic time by which the request in progress on this thread must be over
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "outbound_deadline", default=None)

DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class DeadlineExceeded(httpx.TimeoutException):
    """The whole exchange took longer than its deadline."""


class ResponseTooLarge(httpx.RequestError):
    """The answer's body is larger than the cap; it was not read past it."""


def _clamp(timeout: float | None) -> float | None:
    """The socket timeout for one operation: never past the request's deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write ends by the request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clamp(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clamp(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname,
                                                     _clamp(timeout)))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.SyncBackend):
    """httpcore's socket backend, each operation bounded by the request's deadline."""

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:
        return DeadlineStream(super().connect_tcp(host, port, _clamp(timeout), local_address,
                                                  socket_options))


class PublicOnlyBackend(DeadlineBackend):
    """Resolves the host itself, refuses non-public addresses, connects to a checked one."""

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        addresses = list(dict.fromkeys(info[4][0] for info in found))
        refused = [address for address in addresses if not is_public(address)]
        if refused:
            raise RefusedAddress(f"{host} resolves to {refused[0]}, not a public address")
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last = error
        raise last or httpcore.ConnectError(f"{host} has no address")


def is_refusal(error: BaseException) -> bool:
    """Whether an httpx error stands for a refused (non-public) address."""
    while error is not None:
        if isinstance(error, RefusedAddress):
            return True
        error = error.__cause__ or error.__context__
    return False


class Unsent(typing.NamedTuple):
    """A request that never reached the server: `permanent` when no retry can mend it (the
    URL, or an address the rules refuse), else safe to repeat, even a write."""
    permanent: bool
    reason: str


def unsent(error: httpx.RequestError, url: str, host: str) -> Unsent | None:
    """What a failure before anything was sent means, worded with `url` and `host` (e.g.
    "the webhook URL", "the webhook's host") and never the URL, host or address itself (the
    tenant's members read reasons); None when the request may have reached the server."""
    if isinstance(error, PlainHttpRefused):
        return Unsent(True, f"{url} must use https")
    if isinstance(error, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return Unsent(True, f"{url} cannot be used")
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                          httpx.ProxyError)):
        if is_refusal(error):
            return Unsent(True, f"refused to connect: {host} is not a public address")
        return Unsent(False, f"cannot connect ({type(error).__name__})")
    return None


_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def ssl_context() -> ssl.SSLContext:
    """One verifying context per process (loading the CA bundle takes tens of milliseconds);
    SSL_CERT_FILE / SSL_CERT_DIR are honoured."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context(trust_env=True)
        return _ssl_context


class OutboundTransport(httpx.HTTPTransport):
    """httpx's own transport, with its connection pool on a deadline-bounded backend that
    checks addresses unless private ones are allowed."""

    def __init__(self, allow_private: bool = False) -> None:
        context = ssl_context()
        # trust_env=False: proxies from the environment would skip the check
        super().__init__(verify=context, trust_env=False)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20,
                              keepalive_expiry=5.0)   # httpx's defaults
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=DeadlineBackend() if allow_private else PublicOnlyBackend())
        self._allow_private = allow_private

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self._allow_private and request.url.scheme != "https":
            raise PlainHttpRefused("only https URLs may be reached", request=request)
        return super().handle_request(request)


def client(allow_private: bool) -> httpx.Client:
    """An httpx client for tenant-chosen URLs: public addresses only unless allowed; every
    connection it opens honours the deadline of `send`."""
    return httpx.Client(transport=OutboundTransport(allow_private), trust_env=False)


def send(http: httpx.Client, method: str, url: str, *, deadline: float,
         max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, **kwargs: typing.Any) -> httpx.Response:
    """One request, over within `deadline` seconds and answered in at most `max_bytes`, or
    DeadlineExceeded / ResponseTooLarge (both httpx.RequestErrors). The answer comes back
    fully read."""
    if not math.isfinite(deadline) or deadline <= 0:
        raise ValueError("deadline must be a positive number of seconds")
    ends = time.monotonic() + deadline
    token = _deadline.set(ends)
    try:
        with http.stream(method, url, **kwargs) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise ResponseTooLarge(f"the answer is larger than {max_bytes} bytes",
                                           request=response.request)
                chunks.append(chunk)
                if time.monotonic() > ends:   # a client whose sockets don't know the deadline
                    raise DeadlineExceeded(f"no complete answer within {deadline:g}s",
                                           request=response.request)
            headers = response.headers.copy()
            headers.pop("content-encoding", None)   # the chunks are decoded already
            return httpx.Response(response.status_code, headers=headers,
                                  content=b"".join(chunks), request=response.request,
                                  extensions={"http_version": response.http_version.encode()})
    except httpx.TimeoutException as error:
        if time.monotonic() >= ends - 0.05 and not isinstance(error, DeadlineExceeded):
            raise DeadlineExceeded(f"no complete answer within {deadline:g}s",
                                   request=error.request) from error
        raise
    finally:
        _deadline.reset(token)
