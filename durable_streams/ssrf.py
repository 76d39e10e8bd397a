"""Rules against server-side request forgery for every outbound request.

The proxy (:mod:`durable_streams.proxy`) and webhook deliveries connect to URLs
that clients name, so both apply one rule set, defined here:

* a connection may only go to a *public* address: :attr:`ipaddress.IPv4Address.is_global`
  (no RFC 1918, loopback, link-local and cloud metadata, CGNAT, unspecified,
  reserved or documentation ranges) and not multicast; IPv4-mapped IPv6
  addresses are judged as the IPv4 address they carry;
* the check runs between name resolution and connect, on *every* address the
  name resolves to, and the connection goes to an address that was checked, so
  DNS cannot answer differently between the check and the connection
  (:class:`GuardedBackend`);
* callers never follow redirects, so a redirect cannot lead to an unchecked host.

The development exception: when the caller allows it (a setting that defaults
to ``settings.DEBUG``), a URL whose host is ``localhost`` (or ``*.localhost``)
or a loopback literal may connect to loopback addresses, and only to those.
Private network targets are never allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURL(ValueError):
    """A URL (or an address it resolves to) the SSRF rules refuse."""


def literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_public(ip: IPAddress) -> bool:
    """Whether an outbound connection may go to ``ip`` outside the exception."""
    ip = _unmapped(ip)
    return ip.is_global and not ip.is_multicast


def is_local_dev_host(host: str) -> bool:
    """Whether ``host`` is one the development exception covers."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    ip = literal_ip(host)
    return ip is not None and _unmapped(ip).is_loopback


def address_allowed(host: str, ip: IPAddress, *, allow_localhost: bool) -> bool:
    """Whether a connection for URL host ``host`` may go to ``ip``."""
    if is_public(ip):
        return True
    return allow_localhost and is_local_dev_host(host) and _unmapped(ip).is_loopback


def check_host(host: str, *, allow_localhost: bool) -> None:
    """Refuse a host that names a non-public address literally (before any I/O)."""
    if is_local_dev_host(host):
        if allow_localhost:
            return
        raise UnsafeURL("localhost and loopback addresses are not allowed")
    ip = literal_ip(host)
    if ip is not None and not is_public(ip):
        raise UnsafeURL("private, link-local and local addresses are not allowed")


async def resolve(host: str, port: int, *, allow_localhost: bool) -> list[str]:
    """The addresses ``host`` resolves to, all checked: :class:`UnsafeURL` if
    any of them is refused, ``OSError`` if the name does not resolve."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 scope id
        ip = ipaddress.ip_address(address)
        if not address_allowed(host, ip, allow_localhost=allow_localhost):
            raise UnsafeURL(f"{host} resolves to {ip}, a non-public address")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError(f"{host} did not resolve")
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the SSRF check between resolution and connect.

    ``allow_localhost`` is asked on every connection (settings are read
    lazily). TLS still verifies the certificate against the URL's host name:
    httpcore passes the origin's host as the server name when it starts TLS.
    """

    def __init__(self, allow_localhost: Callable[[], bool]) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_localhost = allow_localhost

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options=None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await asyncio.wait_for(
                resolve(host, port, allow_localhost=self._allow_localhost()), timeout
            )
        except UnsafeURL as exc:
            raise SSRFRefused(f"refused by SSRF rules: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):  # noqa: ASYNC109
        raise httpcore.ConnectError("outbound requests never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class SSRFRefused(httpcore.ConnectError):
    """The connection was refused by the SSRF rules (a ConnectError to httpx)."""
