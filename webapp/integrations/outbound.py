"""HTTP clients for addresses a tenant chose: a PSA URL, or a zone its PSA points at.

An account admin types the PSA's URL, and Autotask's zone lookup answers with another one; a
worker then connects wherever they point. Unless the operator allows it
(`PSA_ALLOW_PRIVATE_ADDRESSES`), those connections may only reach public addresses: never
loopback, the private ranges, link-local (cloud metadata at 169.254.169.254) and the like. The
check is made on the addresses the name resolves to, at connect time, and the connection goes
to the address that was checked, so a DNS answer that changes in between (rebinding) cannot
slip through. TLS still verifies the certificate against the host name.
"""
from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import typing
from urllib.parse import urlsplit

import httpcore
import httpx

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


def refusal_for_url(url: str) -> str | None:
    """Why a URL can never be reached when private addresses are refused (its host is a
    private address or a local name), without resolving anything; None if it may be."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if not host:
        return "the URL has no host"
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return f"{host} is this machine"
    try:
        public = is_public(host)
    except ValueError:
        return None  # a name: checked when it is resolved
    return None if public else f"{host} is not a public address"


class PublicOnlyBackend(httpcore.SyncBackend):
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


class PublicOnlyTransport(httpx.HTTPTransport):
    """httpx's own transport, with its connection pool on the checking backend."""

    def __init__(self) -> None:
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
            network_backend=PublicOnlyBackend())


def client(allow_private: bool) -> httpx.Client:
    """An httpx client for tenant-chosen URLs: public addresses only unless allowed."""
    if allow_private:
        return httpx.Client(verify=ssl_context())
    return httpx.Client(transport=PublicOnlyTransport(), trust_env=False)
