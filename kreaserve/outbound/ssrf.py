"""The SSRF guard of task callbacks.

Two checks, one at each end of a callback's life:

* `check_url` when a task is created: https only, at most 2048 characters, no credentials,
  and no host that names an internal address literally, in any spelling (`2130706433`,
  `0x7f.1`, `[::ffff:7f00:1]`, `１２７.０.０.１`, `%31%32%37.0.0.1`, `localhost.` ...).
* `pinned.post_pinned` when the callback is sent: the host is resolved (`resolve_checked`), every
  address it resolves to must be public, and the connection goes to the address that was
  checked, so a DNS answer that changes between the check and the connect (rebinding) cannot
  redirect the request. TLS (SNI and the certificate's host name) and the Host header still use
  the name from the URL. Redirects are never followed, no proxy from the environment is used,
  and one total deadline covers connect, TLS, sending and reading the answer.

`allow_hosts` is a frozenset of hosts as `normalise_host` writes them (the setting
KREASERVE_CALLBACK_ALLOW_HOSTS, for test receivers only): such a host skips the
internal-address rule, literal and resolved, and nothing else.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import idna

from kreaserve import contract

__all__ = [
    "MAX_URL_LENGTH",
    "IPAddress",
    "UnsafeURLError",
    "check_url",
    "is_internal_address",
    "literal_address",
    "normalise_host",
    "parse_url",
    "resolve_checked",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list[tuple[Any, ...]]]

#: Longest callback_url accepted, in characters (the contract's).
MAX_URL_LENGTH = contract.CALLBACK_URL_MAX


class UnsafeURLError(ValueError):
    """A callback URL that must not be used; str() is a reason fit for an API error."""


# --- addresses ----------------------------------------------------------------------------

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

#: IPv4 blocks that are never a callback receiver (IANA special-purpose, not global).
_INTERNAL_V4 = tuple(
    _V4(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)

#: IPv6 blocks refused outright (those that embed an IPv4 address are judged by it instead).
_INTERNAL_V6 = tuple(
    _V6(net)
    for net in (
        "::/128",  # unspecified (also caught as IPv4-compatible 0.0.0.0)
        "::1/128",  # loopback (also caught as IPv4-compatible 0.0.0.1)
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): the operator's own translator
        "100::/64",  # discard-only
        "2001::/32",  # Teredo: tunnels to an address we cannot judge
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
#: The only IPv6 space in global unicast use; anything else is reserved or special.
_GLOBAL_UNICAST_V6 = _V6("2000::/3")

_MAPPED = _V6("::ffff:0:0/96")  # IPv4-mapped
_TRANSLATED = _V6("::ffff:0:0:0/96")  # IPv4-translated (SIIT)
_COMPATIBLE = _V6("::/96")  # IPv4-compatible (deprecated)
_NAT64 = _V6("64:ff9b::/96")  # well-known NAT64 prefix
_SIX_TO_FOUR = _V6("2002::/16")  # 6to4


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, translated, compatible, NAT64,
    6to4), or None."""
    if address in _MAPPED or address in _TRANSLATED or address in _COMPATIBLE or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    return None


def is_internal_address(address: IPAddress) -> bool:
    """True for every address a callback must not reach: private, loopback, link-local,
    shared, reserved, multicast, broadcast, documentation, and the IPv6 forms of those
    (IPv4-mapped/-compatible/-translated, NAT64, 6to4 judged by the IPv4 they embed)."""
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(int(address))  # drops a zone id
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_internal_address(embedded)
        if any(address in net for net in _INTERNAL_V6) or address not in _GLOBAL_UNICAST_V6:
            return True
    elif isinstance(address, ipaddress.IPv4Address):
        if any(address in net for net in _INTERNAL_V4):
            return True
    else:
        raise TypeError(f"not an IP address: {address!r}")
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


# --- host names ---------------------------------------------------------------------------

_ASCII_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
#: A last label that parses as a number means the whole host is meant as an IPv4 address
#: (as in the WHATWG URL standard); no top-level domain is numeric.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _invalid_host() -> UnsafeURLError:
    return UnsafeURLError("callback_url has an invalid host")


def _ipv6(text: str) -> ipaddress.IPv6Address:
    """An IPv6 literal, with or without brackets, its zone id (`%eth0`) dropped."""
    if text.startswith("[") != text.endswith("]"):
        raise _invalid_host()
    text = text.removeprefix("[").removesuffix("]").partition("%")[0]
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise _invalid_host() from None


def _ascii_labels(host: str) -> str:
    """The A-label form of an UTS-46-mapped name, each label checked."""
    labels = host.split(".")
    out = []
    for label in labels:
        if label.isascii():
            if not _ASCII_LABEL.fullmatch(label):
                raise _invalid_host()
            if label.startswith("xn--"):
                try:  # a Punycode label must decode to a valid IDNA label, and back
                    if idna.alabel(idna.ulabel(label)).decode("ascii") != label:
                        raise _invalid_host()
                except (idna.IDNAError, UnicodeError):
                    raise _invalid_host() from None
        else:
            try:
                label = idna.alabel(label).decode("ascii")
            except (idna.IDNAError, UnicodeError):
                raise _invalid_host() from None
        out.append(label)
    name = ".".join(out)
    if len(name) > 253:
        raise _invalid_host()
    return name


def normalise_host(host: str) -> str:
    """The canonical form of a URL host: percent-decoded (once), UTS-46 mapped (fullwidth
    forms, ideographic full stops, case), IDNA A-labels, lower case, one trailing dot
    removed. A host that denotes an IP address in any spelling becomes that address in its
    standard form (`0x7f.1` -> `127.0.0.1`, `[::ffff:127.0.0.1]` -> `::ffff:7f00:1`), without
    brackets or zone id. Raises UnsafeURLError when the host cannot be normalised."""
    if not isinstance(host, str) or not host:
        raise _invalid_host()
    try:
        text = urllib.parse.unquote(host, errors="strict")
    except UnicodeDecodeError:
        raise _invalid_host() from None
    try:
        text = idna.uts46_remap(text, std3_rules=False, transitional=False).lower()
    except (idna.IDNAError, UnicodeError, IndexError):
        raise _invalid_host() from None
    if ":" in text or text.startswith("["):
        return str(_ipv6(text))
    if text.endswith("."):
        text = text[:-1]
    if not text or any(not label for label in text.split(".")):
        raise _invalid_host()
    name = _ascii_labels(text)
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        try:  # the C library's parser: 127.1, 0x7f.1, 0177.0.0.1, 2130706433 ...
            return str(ipaddress.IPv4Address(socket.inet_aton(name)))
        except OSError:
            raise _invalid_host() from None
    return name


def literal_address(host: str) -> IPAddress | None:
    """The IP address `host` denotes literally, in any spelling, or None for a name.
    Raises UnsafeURLError when the host cannot be normalised."""
    name = normalise_host(host)
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _is_local_name(name: str) -> bool:
    return name in _LOCAL_NAMES or name.endswith(".localhost")


# --- URLs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedURL:
    host: str  # normalised (normalise_host)
    port: int
    target: str  # path and query, as given

    def url(self) -> str:
        """The URL to send to: the normalised host, the port, the path and query."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == 443 else f":{self.port}"
        return f"https://{host}{port}{self.target}"


_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_PORT = re.compile(r"[0-9]{0,5}")


def parse_url(url: str) -> ParsedURL:
    """Check everything but the internal-address rule; the parts to send to."""
    if not isinstance(url, str):
        raise UnsafeURLError("callback_url must be a string")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURLError(f"callback_url must be at most {MAX_URL_LENGTH} characters")
    if _BAD_URL_CHARS.search(url) or any(ch.isspace() for ch in url):
        raise UnsafeURLError(
            "callback_url must not contain spaces, control characters or backslashes"
        )
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise UnsafeURLError("callback_url is not a valid URL") from None
    if parts.scheme != "https":
        raise UnsafeURLError("callback_url must use https")
    netloc = parts.netloc
    if "@" in netloc:
        raise UnsafeURLError("callback_url must not contain credentials")
    if netloc.startswith("["):
        host, bracket, port = netloc.partition("]")
        host += bracket
        if port and not port.startswith(":"):
            raise _invalid_host()
        port = port[1:]
    else:
        host, _, port = netloc.partition(":")
    if not host:
        raise UnsafeURLError("callback_url must name a host")
    if not _PORT.fullmatch(port) or (port and not 0 < int(port) < 65536):
        raise UnsafeURLError("callback_url has an invalid port")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return ParsedURL(host=normalise_host(host), port=int(port) if port else 443, target=target)


def _refuse_literal(host: str, allow_hosts: frozenset[str]) -> None:
    if host in allow_hosts:
        return
    address = literal_address(host)
    if _is_local_name(host) or (address is not None and is_internal_address(address)):
        raise UnsafeURLError("callback_url must not point to an internal address")


def check_url(url: str, allow_hosts: frozenset[str] = frozenset()) -> str:
    """The check at task creation: https, at most 2048 characters, no user or password (not
    even empty ones), and a host that is not `localhost`/`*.localhost` and names no internal
    address literally. Returns `url` unchanged; raises UnsafeURLError otherwise."""
    parsed = parse_url(url)
    _refuse_literal(parsed.host, allow_hosts)
    return url


# --- resolving ----------------------------------------------------------------------------


def resolve_checked(
    host: str,
    port: int,
    allow_hosts: frozenset[str] = frozenset(),
    resolver: Resolver = socket.getaddrinfo,
) -> list[IPAddress]:
    """The check at send time: the addresses `host` resolves to (in the resolver's order,
    without repeats), every one of them public; raises UnsafeURLError if any is internal or
    none resolves. A literal address is not resolved but checked the same way."""
    name = normalise_host(host)
    _refuse_literal(name, allow_hosts)
    literal = literal_address(name)
    if literal is not None:
        return [literal]
    try:
        answers = resolver(name, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeURLError("callback_url host could not be resolved") from None
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(str(answer[4][0]).partition("%")[0])
        except (ValueError, IndexError, TypeError):
            raise UnsafeURLError("callback_url host resolved to an invalid address") from None
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeURLError("callback_url host could not be resolved")
    if name not in allow_hosts and any(is_internal_address(a) for a in addresses):
        raise UnsafeURLError("callback_url must not point to an internal address")
    return addresses
