"""SSRF guard for ``callback_url``: webhooks go to public addresses unless an operator allows more.

    policy = CallbackPolicy(allowlist=("127.0.0.0/8", "n8n.internal"))
    await check_callback_url(call.callback_url, policy)        # at submit time
    addresses = await resolve_and_check(message.url, policy)  # again at send time (DNS rebinding)

A URL is refused (``InvalidRequestError``, code ``callback_url_forbidden``) when it is not
http(s), has no host, or when ANY address its host resolves to is private, loopback,
link-local (cloud metadata), multicast, reserved, unspecified, shared (CGNAT), or an IPv6
form embedding one of those (IPv4-mapped, 6to4, Teredo, NAT64). A host or address on the
allowlist passes. A host that does not resolve is ``callback_url_unresolvable``.
Messages and logs name only the URL's origin: paths and query strings may carry tokens.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from .._exceptions import InvalidRequestError

__all__ = [
    "CallbackPolicy",
    "Resolver",
    "check_callback_url",
    "check_ip",
    "forbidden_reason",
    "redact_url",
    "resolve_and_check",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``async (host, port) -> [address, ...]``; the default asks the event loop's getaddrinfo."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")


@dataclass(frozen=True)
class CallbackPolicy:
    """Where webhooks may go."""

    allow_private: bool = False
    """Skip the address check entirely (single-machine setups, tests)."""
    allowlist: tuple[str, ...] = ()
    """Hostnames (``"localhost"``, ``"*.corp.example"``) and addresses or CIDRs (``"10.1.0.0/16"``)."""
    _hosts: frozenset[str] = field(init=False, repr=False, compare=False)
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        hosts: set[str] = set()
        networks = []
        for entry in self.allowlist:
            item = entry.strip().lower().rstrip(".")
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                hosts.add(item)
        object.__setattr__(self, "_hosts", frozenset(hosts))
        object.__setattr__(self, "_networks", tuple(networks))

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if host in self._hosts:
            return True
        return any(h.startswith("*.") and host.endswith(h[1:]) for h in self._hosts)

    def address_allowed(self, address: IPAddress) -> bool:
        return any(address in net for net in self._networks if net.version == address.version)


def redact_url(url: str) -> str:
    """``scheme://host:port/...``: safe to log and to echo in errors."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme or '?'}://{host}{port}/..."


def forbidden_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not receive webhooks, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or (address.sixtofour) or (
            address.teredo[1] if address.teredo else None
        )
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            return f"{inner} (embedded in IPv6)" if inner else None
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata)"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared (CGNAT)"
    if not address.is_global:
        return "non-global"
    return None


def _forbidden(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, code="callback_url_forbidden", param="callback_url")


def check_ip(address: str | IPAddress, policy: CallbackPolicy, *, origin: str = "callback_url") -> None:
    """Raise ``callback_url_forbidden`` unless ``address`` may receive webhooks under ``policy``."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    if policy.allow_private or policy.address_allowed(ip):
        return
    reason = forbidden_reason(ip)
    if reason is not None:
        raise _forbidden(
            f"{origin} resolves to {ip}, a {reason} address; webhooks only go to public "
            "addresses. Use a public URL, or have the operator add this host or address "
            "(e.g. '127.0.0.0/8') to the callback allowlist (OVERNIGHT_CALLBACK_ALLOWLIST)"
        )


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_and_check(
    url: str,
    policy: CallbackPolicy,
    *,
    resolver: Resolver | None = None,
    timeout: float = 5.0,
) -> list[str]:
    """Check ``url`` and every address its host resolves to; return those addresses."""
    origin = redact_url(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _forbidden(f"callback_url {origin} is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise _forbidden(f"callback_url must be http:// or https://, not {parts.scheme or 'no'} scheme")
    if not host:
        raise _forbidden("callback_url has no host; give an absolute URL like https://example.com/hook")

    try:
        literal: IPAddress | None = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = await asyncio.wait_for((resolver or _getaddrinfo)(host, port), timeout)
        except (OSError, asyncio.TimeoutError, UnicodeError):
            addresses = []
        if not addresses:
            raise InvalidRequestError(
                f"callback_url host of {origin} does not resolve; check the hostname and "
                "that it is reachable from the Overnight server",
                code="callback_url_unresolvable",
                param="callback_url",
            )
    if literal is None and policy.host_allowed(host):
        return addresses
    for address in addresses:
        check_ip(address, policy, origin=f"callback_url {origin}")
    return addresses


async def check_callback_url(
    url: str, policy: CallbackPolicy, *, resolver: Resolver | None = None
) -> None:
    """Refuse a ``callback_url`` at submit time (see the module docstring for the rules)."""
    await resolve_and_check(url, policy, resolver=resolver)
