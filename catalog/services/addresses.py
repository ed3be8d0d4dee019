"""Refuse downloads from private addresses, checked where the socket connects (no DNS gap).

The downloader's connections resolve the host themselves, check every address it resolves
to, and connect to one of the checked addresses: a DNS answer that changes between a check
and the connect (DNS rebinding) cannot slip through, and every redirect hop opens its
connection through the same check. Host header and TLS SNI keep the original host name.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util import connection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MSG_PRIVATE = (
    "refused: {host} resolves to {address}, a {kind} address "
    "(set LOOKALIKE_DOWNLOAD_ALLOW_PRIVATE=1 to allow private addresses)"
)

NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class PrivateAddressError(Exception):
    """The host resolves to an address downloads may not reach; the message says which.

    Not an OSError on purpose: urllib3 retries OSErrors, and a refusal is final.
    """


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be fetched from ("loopback", "private", ...), or None if public.

    IPv6 forms that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4, Teredo,
    NAT64 ``64:ff9b::/96``) are judged by the IPv4 address they lead to.
    """
    if isinstance(address, ipaddress.IPv6Address):
        translated = _translated_ipv4(address)
        if translated is not None:  # the connection really goes to this IPv4 address
            return address_refusal(translated)
        for embedded in _tunnelled_ipv4(address):
            reason = address_refusal(embedded)
            if reason is not None:
                return reason
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    )
    for kind, hit in checks:
        if hit:
            return kind
    if not address.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT), 192.0.0.0/24
        return "non-public"
    return None


def _translated_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address behind an IPv4-mapped or NAT64 address, else None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64 or address in NAT64_LOCAL:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _tunnelled_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses a 6to4 or Teredo address leads to."""
    embedded = [address.sixtofour, *(address.teredo or ())]
    return [ip for ip in embedded if ip is not None]


def public_addresses(host: str, port: int) -> list[tuple[Any, ...]]:
    """getaddrinfo results for ``host``, all checked; PrivateAddressError if any is refused.

    Every address must be public (not just the first): a name that also resolves to an
    internal address is refused as a whole.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        kind = address_refusal(address)
        if kind is not None:
            raise PrivateAddressError(MSG_PRIVATE.format(host=host, address=address, kind=kind))
    return infos


class _GuardedConnectionMixin:
    """Resolve, check, connect to the checked address: replaces urllib3's ``_new_conn``."""

    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        try:
            infos = public_addresses(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        error: OSError | None = None
        for *_, address in infos:
            # An IP literal: create_connection resolves nothing, it connects to this address.
            try:
                sock = connection.create_connection(
                    (address[0], self.port), self.timeout,
                    source_address=self.source_address, socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                raise ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
                ) from exc
            except OSError as exc:
                error = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        raise NewConnectionError(
            self, f"Failed to establish a new connection: {error or 'no address'}"  # type: ignore[arg-type]
        )


class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose every connection (redirect hops included) is guarded."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        manager: PoolManager = self.poolmanager
        manager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # Through a proxy the guard would check the proxy, not the image host.
        raise PrivateAddressError(
            f"refused: downloads through a proxy ({proxy}) cannot be checked for private "
            "addresses; unset the proxy or set LOOKALIKE_DOWNLOAD_ALLOW_PRIVATE=1"
        )
