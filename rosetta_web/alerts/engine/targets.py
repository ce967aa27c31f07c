"""Where a channel may send.

Never to a link-local address (169.254.0.0/16, fe80::/10), an unspecified one (0.0.0.0, ::)
or a cloud's metadata service (169.254.169.254, fd00:ec2::254, metadata.google.internal, ...):
a channel aimed there would hand the machine's cloud credentials to its receiver. Loopback
and private addresses are allowed (a local relay is normal) unless
ALERT_PRIVATE_TARGETS=false.

A channel's URL is checked when it is saved, by its host as written. Every connection a send
opens is checked again as it connects, by the address it connects to: after DNS, so a name
that resolves to a refused address is refused too, at the address actually connected to, so
a second, different DNS answer cannot slip through (a library that hands connect() a name
rather than an address is checked by looking the name up once more). Python's audit hook on
`socket.connect` sees every connection whichever library opens it (requests for webhooks,
Apprise's HTTP, SMTP and the rest), and a context variable says whether it belongs to a send:
Apprise runs a send on a thread of its own with a copy of the caller's context.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ...channel_urls import apprise_plugin

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# The clouds' instance metadata services, by address: most are link-local anyway, but AWS's
# IPv6 one is a unique-local address, and Alibaba's and Oracle's older one look private.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, Google Cloud, Azure, Oracle, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS pod identity
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud, older instances
    )
)
# ... and by name, refused as written even where they do not resolve.
METADATA_NAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # "this host": 0.0.0.0 and its neighbours
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix
_PRIVATE_OFF = "refused while ALERT_PRIVATE_TARGETS=false"


def address_refusal(address: Address, allow_private: bool) -> str | None:
    """Say why a channel may not send to an address, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:169.254.169.254 reaches 169.254.169.254
    if isinstance(address, ipaddress.IPv6Address) and address in _NAT64:
        # 64:ff9b::a9fe:a9fe reaches 169.254.169.254 through a NAT64 gateway.
        address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified or (
        isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK
    ):
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if not allow_private:
        if address.is_loopback:
            return f"a loopback address, {_PRIVATE_OFF}"
        if not address.is_global:
            return f"a private address, {_PRIVATE_OFF}"
    return None


def parse_address(host: str, numeric_forms: bool = False) -> Address | None:
    """Read a host as an IP address, or return None for a name.

    With `numeric_forms`, also as the resolver reads a URL's host: 2852039166 or 0xa9.0xfe.0xa9.0xfe
    are 169.254.169.254. Apprise's URLs put tokens where a host goes (a Telegram bot's number),
    so they are read strictly.
    """
    text = host.strip("[]").split("%", 1)[0]  # an IPv6 zone (%eth0) does not change the address
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if numeric_forms and text[:1].isdigit() and set(text.lower()) <= set("0123456789abcdefx."):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def host_refusal(host: str, allow_private: bool, numeric_forms: bool = False) -> str | None:
    """Say why a channel may not send to a host as written (no DNS), or None when it may."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_NAMES:
        return "a cloud metadata name"
    address = parse_address(name, numeric_forms)
    if address is not None:
        return address_refusal(address, allow_private)
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        return f"a loopback name, {_PRIVATE_OFF}"  # RFC 6761: always this machine
    return None


def _hosts(kind: str, url: str) -> list[tuple[str, bool]]:
    """The hosts a channel's URL names, each with whether to read numeric forms in it."""
    try:
        written = urlsplit(url).hostname
    except ValueError:  # a malformed IPv6 host: the URL's own check says so
        return []
    if kind == "webhook":
        return [(written, True)] if written else []
    hosts = [written] if written else []
    plugin = apprise_plugin(url)
    # Where Apprise's service connects, when the URL names it: a custom host (json://, ntfy://)
    # or an e-mail's SMTP server (?smtp=).
    for attribute in ("host", "smtp_host"):
        value = getattr(plugin, attribute, None)
        if isinstance(value, str) and value:
            hosts.append(value)
    return [(host, False) for host in hosts]


def url_refusal(kind: str, url: str, allow_private: bool) -> tuple[str, str] | None:
    """Return a host a channel's URL names that a channel may not send to, and why; None
    when there is none. As written: names are not looked up."""
    for host, numeric_forms in _hosts(kind, url):
        reason = host_refusal(host, allow_private, numeric_forms)
        if reason is not None:
            return host.strip("[]"), reason
    return None


class TargetRefused(ConnectionRefusedError):
    """A send tried to connect where a channel may not send."""


@dataclass
class Guard:
    """What one send may connect to, and the connections it was refused."""

    allow_private: bool
    refused: list[str] = field(default_factory=list)
    # The name last looked up, to name it in a refusal of the address it resolved to.
    resolving: str | None = None

    def check(self, host: str) -> None:
        """Raise TargetRefused if a connection to `host` is one a channel may not make."""
        address = parse_address(host)
        if address is None:  # a name handed to connect() itself: check what it resolves to
            self.resolving = host
            addresses = [parse_address(str(info[4][0])) for info in socket.getaddrinfo(host, None)]
        else:
            addresses = [address]
        for each in addresses:
            if each is None:
                continue
            reason = address_refusal(each, self.allow_private)
            if reason is None:
                continue
            name = self.resolving
            if name and parse_address(name) is None:
                message = f"refused to send to {name}: it resolves to {each}, {reason}"
            else:
                message = f"refused to send to {each}: {reason}"
            self.refused.append(message)
            raise TargetRefused(message)


_guard: ContextVar[Guard | None] = ContextVar("rosetta_channel_guard", default=None)
_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"})
_install_lock = threading.Lock()
_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Called for every audit event of the process: leave at once unless a send connects.
    if event not in _EVENTS:
        return
    guard = _guard.get()
    if guard is None:
        return
    if event == "socket.getaddrinfo":
        host = args[0]
        guard.resolving = host.decode() if isinstance(host, bytes) else host
        return
    sock, address = args[0], args[1]
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    if isinstance(address, tuple) and address:
        guard.check(str(address[0]))


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:  # an audit hook cannot be removed: one for the process
            sys.addaudithook(_audit)
            _installed = True


@contextmanager
def guarded(allow_private: bool) -> Iterator[Guard]:
    """Refuse, within, every connection to where a channel may not send, on this thread and
    on those it hands its context to."""
    _install()
    guard = Guard(allow_private)
    token = _guard.set(guard)
    try:
        yield guard
    finally:
        _guard.reset(token)
