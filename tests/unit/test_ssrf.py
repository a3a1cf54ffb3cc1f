"""The SSRF guard of callbacks (kreaserve.outbound.ssrf): internal addresses in every
spelling are refused when a task is created and again after resolving when the callback is
sent; the connection goes to the address that was checked (no DNS rebinding), TLS and the
Host header keep the URL's name, redirects are not followed and the time limit is total."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kreaserve.outbound.pinned import MAX_RESPONSE_BYTES, post_pinned
from kreaserve.outbound.ssrf import (
    UnsafeURLError,
    check_url,
    is_internal_address,
    literal_address,
    normalise_host,
    resolve_checked,
)
from tests.tlsutil import https_server, make_ca_and_cert

INTERNAL = "must not point to an internal address"
TEST_HOST = "hooks.kreaserve.test"

#: One or more addresses of every block a callback must never reach.
INTERNAL_ADDRESSES = [
    # IPv4
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "169.254.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.1",
    "192.0.0.9",
    "192.0.0.170",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.0.1",
    "192.168.255.255",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "250.1.2.3",
    "255.255.255.255",
    # IPv6
    "::",
    "::1",
    "fc00::1",
    "fd12:3456:789a::1",
    "fe80::1",
    "febf:ffff::1",
    "fec0::1",
    "feff::1",
    "ff02::1",
    "ff05::1:3",
    "ff0e::1",
    "100::1",
    "2001:db8::1",
    "3fff::1",
    "4000::1",
    "5f00::1",
    # IPv4-mapped, -translated and -compatible forms of internal IPv4
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::ffff:0.0.0.0",
    "::ffff:0:127.0.0.1",
    "::127.0.0.1",
    "::10.0.0.1",
    "::169.254.169.254",
    # NAT64: the well-known prefix judged by its IPv4, the local-use prefix always
    "64:ff9b::127.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::c0a8:101",
    "64:ff9b:1::1",
    "64:ff9b:1::5db8:d822",
    # 6to4 of internal IPv4, and Teredo outright
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::",
    "2002:a00:1::",
    "2001::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
]

PUBLIC_ADDRESSES = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "151.101.1.69",
    "2606:2800:220:1:248:1893:25c7:1946",
    "2001:4860:4860::8888",
    "::ffff:93.184.216.34",
    "64:ff9b::5db8:d822",
    "2002:5db8:d822::1",
]

#: Odd spellings of internal addresses in a URL's host (port included where shown), and the
#: address each one means.
ODD_SPELLINGS = {
    "2130706433": "127.0.0.1",
    "0x7f000001": "127.0.0.1",
    "0X7F000001": "127.0.0.1",
    "0177.0.0.1": "127.0.0.1",
    "0177.0000.0000.0001": "127.0.0.1",
    "127.1": "127.0.0.1",
    "0x7f.1": "127.0.0.1",
    "0x7f.0x0.0x0.0x1": "127.0.0.1",
    "127.0.1": "127.0.0.1",
    "127.0.0.1.": "127.0.0.1",
    "127.0.0.1:8443": "127.0.0.1",
    "[::ffff:127.0.0.1]": "::ffff:127.0.0.1",
    "[::ffff:7f00:1]": "::ffff:127.0.0.1",
    "[0:0:0:0:0:ffff:127.0.0.1]": "::ffff:127.0.0.1",
    "[0000:0000:0000:0000:0000:ffff:7f00:0001]:443": "::ffff:127.0.0.1",
    "[::1]": "::1",
    "[0:0:0:0:0:0:0:1]": "::1",
    "[::]": "::",
    "[fe80::1%25eth0]": "fe80::1",
    "[FE80::1%25eth0]:8443": "fe80::1",
    "１２７.０.０.１": "127.0.0.1",
    "127。0。0。1": "127.0.0.1",
    "127．0．0．1": "127.0.0.1",
    "127｡0｡0｡1": "127.0.0.1",
    "%31%32%37.0.0.1": "127.0.0.1",
    "%31%32%37%2E%30%2E%30%2E%31": "127.0.0.1",
    "0": "0.0.0.0",
    "0.0.0.0": "0.0.0.0",
    "0x0": "0.0.0.0",
    "169.254.169.254": "169.254.169.254",
    "0251.0376.0251.0376": "169.254.169.254",
    "0xa9fea9fe": "169.254.169.254",
    "2852039166": "169.254.169.254",
    "169.254.43518": "169.254.169.254",
    "[::ffff:a9fe:a9fe]": "::ffff:169.254.169.254",
    "10.1": "10.0.0.1",
    "012.0.0.1": "10.0.0.1",
    "192.168.1": "192.168.0.1",
    "0xc0.0xa8.0x1.0x1": "192.168.1.1",
    "[::127.0.0.1]": "::127.0.0.1",
    "[64:ff9b::127.0.0.1]": "64:ff9b::7f00:1",
    "[2002:7f00:1::]": "2002:7f00:1::",
}

LOCAL_NAMES = [
    "localhost",
    "LOCALHOST",
    "localhost.",
    "LocalHost.",
    "foo.localhost",
    "a.b.LOCALHOST.",
    "localhost.localdomain",
    "ⓛｏｃａｌｈｏｓｔ",
    "%6c%6fcalhost",
    "localhost:8443",
    "ip6-localhost",
    "ip6-loopback",
]


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def host_of(netloc: str) -> str:
    """The host part of a URL's host[:port]."""
    if netloc.startswith("["):
        return netloc[: netloc.index("]") + 1]
    return netloc.partition(":")[0]


def fake_resolver(*answers: str | list[str]) -> Callable[..., list]:
    """A getaddrinfo stand-in; the n-th call answers the n-th entry (the last one again after
    that). It records the names it was asked for in `.calls`."""
    calls: list[tuple[str, int]] = []

    def resolve(
        host: str, port: int, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list:
        calls.append((host, port))
        answer = answers[min(len(calls), len(answers)) - 1]
        addresses = [answer] if isinstance(answer, str) else answer
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


# --- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize("address", INTERNAL_ADDRESSES)
def test_internal_addresses_are_internal(address: str) -> None:
    assert is_internal_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_are_not_internal(address: str) -> None:
    assert not is_internal_address(ipaddress.ip_address(address))


def test_a_zone_id_changes_nothing() -> None:
    assert is_internal_address(ipaddress.IPv6Address("fe80::1%eth0"))
    assert not is_internal_address(ipaddress.IPv6Address("2001:4860:4860::8888%1"))


# --- host normalisation -----------------------------------------------------------------------


@pytest.mark.parametrize("spelling,meaning", ODD_SPELLINGS.items())
def test_every_spelling_of_an_address_is_understood(spelling: str, meaning: str) -> None:
    host = host_of(spelling)
    assert literal_address(host) == ipaddress.ip_address(meaning)
    assert normalise_host(host) == str(ipaddress.ip_address(meaning))


@pytest.mark.parametrize(
    "host,expected",
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("EXAMPLE。COM", "example.com"),
        ("ｅｘａｍｐｌｅ．ｃｏｍ", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("BÜCHER.de.", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("%65xample.com", "example.com"),
        ("my_host.example", "my_host.example"),
        ("faß.de", "xn--fa-hia.de"),
        ("ex\u200bample.com", "example.com"),  # UTS-46 drops zero-width spaces
    ],
)
def test_names_are_normalised(host: str, expected: str) -> None:
    assert normalise_host(host) == expected
    assert normalise_host(expected) == expected
    assert literal_address(host) is None


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "..",
        "a..b",
        ".example.com",
        "example.com..",
        "exa mple.com",
        "a/b",
        "a@b",
        "a\\b",
        "%2531%2532%2537.0.0.1",
        "%zz.example",
        "%ff.example",
        "host%00.example",
        "xn--zz.example",
        "[::1",
        "::ffff:127.1",
        "[::ffff:127.1]",
        "[v1.fe80::1]",
        "foo.127",
        "1.2.3.4.5",
        "08",
        "0x",
        "4294967296",
        "0x100000000",
        "a" * 64 + ".com",
        ".".join(["a" * 60] * 5),
        "exa\ufffdmple.com",
        "\u202eexample.com",
    ],
)
def test_hosts_that_cannot_be_normalised_are_refused(host: str) -> None:
    with pytest.raises(UnsafeURLError, match="^callback_url "):
        normalise_host(host)


# --- check_url (task creation) ----------------------------------------------------------------


@pytest.mark.parametrize("address", INTERNAL_ADDRESSES)
def test_check_url_refuses_internal_addresses(address: str) -> None:
    with pytest.raises(UnsafeURLError, match=INTERNAL):
        check_url(f"https://{url_host(address)}/hook")


@pytest.mark.parametrize("spelling", ODD_SPELLINGS)
def test_check_url_refuses_odd_spellings(spelling: str) -> None:
    with pytest.raises(UnsafeURLError, match=INTERNAL):
        check_url(f"https://{spelling}/hook")


@pytest.mark.parametrize("name", LOCAL_NAMES)
def test_check_url_refuses_localhost_names(name: str) -> None:
    with pytest.raises(UnsafeURLError, match=INTERNAL):
        check_url(f"https://{name}/hook")


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "https://example.com",
        "HTTPS://Example.COM./hook?task=1#frag",
        "https://example.com:8443/a/b?c=d&e=%20f",
        "https://93.184.216.34/hook",
        "https://[2606:2800:220:1:248:1893:25c7:1946]:8443/hook",
        "https://[::ffff:93.184.216.34]/hook",
        "https://bücher.de/hook",
        "https://hooks.example.org/ünïcode/path",
        "https://a.localhost.example.com/",
        "https://" + "a" * 63 + ".example.com/" + "p" * (2048 - 8 - 64 - 13),
    ],
)
def test_check_url_passes_public_urls_unchanged(url: str) -> None:
    assert len(url) <= 2048
    assert check_url(url) is url


@pytest.mark.parametrize(
    "url,reason",
    [
        ("http://example.com/hook", "must use https"),
        ("HTTP://example.com/hook", "must use https"),
        ("ftp://example.com/hook", "must use https"),
        ("//example.com/hook", "must use https"),
        ("example.com/hook", "must use https"),
        ("javascript:alert(1)", "must use https"),
        ("https:example.com", "must name a host"),
        ("https:///hook", "must name a host"),
        ("https://:443/hook", "must name a host"),
        ("https://@example.com/", "credentials"),
        ("https://:@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("https://user:@example.com/", "credentials"),
        ("https://:secret@example.com/", "credentials"),
        ("https://user:secret@example.com/", "credentials"),
        ("https://user%40x:pw@example.com/", "credentials"),
        ("https://example.com@127.0.0.1/", "credentials"),
        ("https://example.com\\@127.0.0.1/", "backslash"),
        ("https://example.com\\.evil/", "backslash"),
        ("https://exa mple.com/", "spaces"),
        ("https://example.com/a b", "spaces"),
        (" https://example.com/", "spaces"),
        ("https://example.com/\n", "control"),
        ("https://exam\tple.com/", "control"),
        ("https://example.com/\x00", "control"),
        ("https://example.com\u3000/", "spaces"),
        ("https://example.com:0/", "invalid port"),
        ("https://example.com:65536/", "invalid port"),
        ("https://example.com:99999/", "invalid port"),
        ("https://example.com:-1/", "invalid port"),
        ("https://example.com:８０/", "invalid port"),
        ("https://example.com:80a/", "invalid port"),
        ("https://[::1]x/", "invalid host"),
        ("https://[::1/", "valid URL"),
        ("https://example..com/", "invalid host"),
        ("https://%5B::1%5D/", "invalid port"),
        ("https://" + "a" * 2041, "at most 2048 characters"),
    ],
)
def test_check_url_refuses_malformed_urls(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURLError, match=reason) as caught:
        check_url(url)
    assert str(caught.value).startswith("callback_url ")


def test_check_url_refuses_what_is_not_a_string() -> None:
    with pytest.raises(UnsafeURLError, match="^callback_url must be a string"):
        check_url(b"https://example.com/")  # type: ignore[arg-type]


def test_url_length_limit_is_2048_characters() -> None:
    base = "https://example.com/"
    assert check_url(base + "a" * (2048 - len(base)))
    with pytest.raises(UnsafeURLError, match="at most 2048"):
        check_url(base + "a" * (2049 - len(base)))


# --- resolve_checked (send time) --------------------------------------------------------------


@pytest.mark.parametrize("address", INTERNAL_ADDRESSES)
def test_resolve_checked_refuses_names_resolving_to_internal_addresses(address: str) -> None:
    resolver = fake_resolver(address)
    with pytest.raises(UnsafeURLError, match=INTERNAL):
        resolve_checked("evil.example", 443, resolver=resolver)
    assert resolver.calls == [("evil.example", 443)]


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_resolve_checked_passes_public_addresses(address: str) -> None:
    resolver = fake_resolver(address)
    assert resolve_checked("example.com", 443, resolver=resolver) == [ipaddress.ip_address(address)]


@pytest.mark.parametrize(
    "answer",
    [
        ["93.184.216.34", "127.0.0.1"],
        ["127.0.0.1", "93.184.216.34"],
        ["2606:2800:220:1:248:1893:25c7:1946", "::1"],
        ["93.184.216.34", "2606:2800:220:1:248:1893:25c7:1946", "169.254.169.254"],
        ["93.184.216.34", "fe80::1%eth0"],
        ["93.184.216.34", "::ffff:10.0.0.1"],
    ],
)
def test_one_internal_address_among_public_ones_is_refused(answer: list[str]) -> None:
    with pytest.raises(UnsafeURLError, match=INTERNAL):
        resolve_checked("evil.example", 443, resolver=fake_resolver(answer))


def test_resolve_checked_keeps_order_without_repeats() -> None:
    answer = ["93.184.216.34", "2606:2800:220:1:248:1893:25c7:1946", "93.184.216.34"]
    assert resolve_checked("example.com", 443, resolver=fake_resolver(answer)) == [
        ipaddress.ip_address("93.184.216.34"),
        ipaddress.ip_address("2606:2800:220:1:248:1893:25c7:1946"),
    ]


def test_resolve_checked_asks_for_the_normalised_name() -> None:
    resolver = fake_resolver("93.184.216.34")
    resolve_checked("BÜCHER。de.", 8443, resolver=resolver)
    assert resolver.calls == [("xn--bcher-kva.de", 8443)]


@pytest.mark.parametrize("spelling", ODD_SPELLINGS)
def test_resolve_checked_refuses_literal_spellings_without_resolving(spelling: str) -> None:
    resolver = fake_resolver("93.184.216.34")
    with pytest.raises(UnsafeURLError, match=INTERNAL):
        resolve_checked(host_of(spelling), 443, resolver=resolver)
    assert resolver.calls == []


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST.", "x.localhost"])
def test_resolve_checked_refuses_localhost_whatever_dns_says(name: str) -> None:
    resolver = fake_resolver("93.184.216.34")
    with pytest.raises(UnsafeURLError, match=INTERNAL):
        resolve_checked(name, 443, resolver=resolver)
    assert resolver.calls == []


def test_a_public_literal_is_not_resolved() -> None:
    resolver = fake_resolver("127.0.0.1")
    assert resolve_checked("93.184.216.34", 443, resolver=resolver) == [
        ipaddress.ip_address("93.184.216.34")
    ]
    assert resolver.calls == []


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def failing(*args: object) -> list:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(UnsafeURLError, match="could not be resolved"):
        resolve_checked("nowhere.example", 443, resolver=failing)
    with pytest.raises(UnsafeURLError, match="could not be resolved"):
        resolve_checked("nowhere.example", 443, resolver=fake_resolver([]))
    with pytest.raises(UnsafeURLError, match="could not be resolved"):
        resolve_checked(TEST_HOST, 443, frozenset({TEST_HOST}), resolver=failing)


# --- the allow-list ---------------------------------------------------------------------------


def test_allow_list_admits_an_internal_address_of_a_named_host() -> None:
    allow = frozenset({TEST_HOST})
    assert check_url(f"https://{TEST_HOST}:8443/hook", allow)
    assert check_url("https://HOOKS.kreaserve.TEST.:8443/hook", allow)
    assert resolve_checked(TEST_HOST, 8443, allow, resolver=fake_resolver("127.0.0.1")) == [
        ipaddress.ip_address("127.0.0.1")
    ]
    assert resolve_checked(
        "Hooks.Kreaserve.Test.", 8443, allow, resolver=fake_resolver(["127.0.0.1", "::1"])
    ) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


@pytest.mark.parametrize(
    "other",
    [
        f"evil.{TEST_HOST}",
        f"{TEST_HOST}.evil",
        "kreaserve.test",
        "hooks-kreaserve.test",
        "hooks.kreaserve.tes",
    ],
)
def test_allow_list_is_exact_for_names(other: str) -> None:
    allow = frozenset({TEST_HOST})
    with pytest.raises(UnsafeURLError, match=INTERNAL):
        resolve_checked(other, 443, allow, resolver=fake_resolver("127.0.0.1"))


def test_allow_list_is_exact_for_addresses() -> None:
    allow = frozenset({"127.0.0.1"})
    for spelling in ("127.0.0.1", "2130706433", "127.1", "127.0.0.1."):  # same address
        assert check_url(f"https://{spelling}:8443/", allow)
        assert resolve_checked(spelling, 8443, allow) == [ipaddress.ip_address("127.0.0.1")]
    for other in ("127.0.0.2", "[::1]", "[::ffff:127.0.0.1]", "localhost", "10.0.0.1"):
        with pytest.raises(UnsafeURLError, match=INTERNAL):
            check_url(f"https://{other}:8443/", allow)
    with pytest.raises(UnsafeURLError, match=INTERNAL):  # a name resolving to it is not it
        resolve_checked("evil.example", 443, allow, resolver=fake_resolver("127.0.0.1"))


def test_allow_list_entries_are_what_normalise_host_writes() -> None:
    allow = frozenset(normalise_host(h) for h in ("Hooks.Kreaserve.Test.", "[::1]", "LOCALHOST"))
    assert allow == {TEST_HOST, "::1", "localhost"}
    assert check_url("https://[0:0:0:0:0:0:0:1]/", allow)
    assert check_url("https://localhost./", allow)


@pytest.mark.parametrize(
    "url,reason",
    [
        (f"http://{TEST_HOST}/hook", "https"),
        (f"https://user@{TEST_HOST}/hook", "credentials"),
        (f"https://@{TEST_HOST}/hook", "credentials"),
        (f"https://{TEST_HOST}/" + "a" * 2048, "2048"),
        ("http://127.0.0.1/", "https"),
    ],
)
def test_allow_list_skips_only_the_internal_address_rule(url: str, reason: str) -> None:
    allow = frozenset({TEST_HOST, "127.0.0.1"})
    with pytest.raises(UnsafeURLError, match=reason):
        check_url(url, allow)
    with pytest.raises(UnsafeURLError, match=reason):
        post_pinned(url, b"{}", {}, allow_hosts=allow, resolver=fake_resolver("127.0.0.1"))


# --- post_pinned over real TLS ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_ca_and_cert(tmp_path_factory.mktemp("tls"), [TEST_HOST])


@pytest.fixture()
def trust_ca(tls: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


class Handler(http.server.BaseHTTPRequestHandler):
    """Records each request; answers 200 with a small JSON body."""

    seen: list[dict]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length", "0"))
        self.seen.append(
            {
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": self.rfile.read(length),
                "sni": getattr(self.request, "sni_name", None),
            }
        )
        self.answer()

    def answer(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def handler(base: type[Handler] = Handler, **attrs: object) -> type[Handler]:
    """A fresh subclass of `base` with its own record of requests."""
    return type("TestHandler", (base,), {"seen": [], **attrs})


def test_post_goes_to_the_pinned_address_with_the_original_host_name(
    tls: tuple[Path, Path, Path], trust_ca: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a proxy in the environment must not take the request elsewhere
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    receiver = handler()
    resolver = fake_resolver("127.0.0.1")
    with https_server(receiver, tls[1], tls[2]) as port:
        response = post_pinned(
            f"https://{TEST_HOST}:{port}/hook?task=1",
            b'{"id": 1}',
            {"content-type": "application/json", "Host": "evil.example", "webhook-id": "msg_1"},
            timeout=5,
            allow_hosts=frozenset({TEST_HOST}),
            resolver=resolver,
        )
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert resolver.calls == [(TEST_HOST, port)]
    [request] = receiver.seen
    assert request["path"] == "/hook?task=1"
    assert request["headers"]["Host"] == f"{TEST_HOST}:{port}"
    assert request["sni"] == TEST_HOST
    assert request["body"] == b'{"id": 1}'
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["webhook-id"] == "msg_1"


def test_the_url_is_sent_with_the_normalised_host_name(
    tls: tuple[Path, Path, Path], trust_ca: None
) -> None:
    receiver = handler()
    with https_server(receiver, tls[1], tls[2]) as port:
        response = post_pinned(
            f"https://HOOKS。kreaserve．test.:{port}/",
            b"{}",
            {},
            timeout=5,
            allow_hosts=frozenset({TEST_HOST}),
            resolver=fake_resolver("127.0.0.1"),
        )
    assert response.status_code == 200
    assert receiver.seen[0]["headers"]["Host"] == f"{TEST_HOST}:{port}"
    assert receiver.seen[0]["sni"] == TEST_HOST


def test_tls_verification_fails_without_the_test_ca(
    tls: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    receiver = handler()
    with https_server(receiver, tls[1], tls[2]) as port:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            post_pinned(
                f"https://{TEST_HOST}:{port}/",
                b"{}",
                {},
                timeout=5,
                allow_hosts=frozenset({TEST_HOST}),
                resolver=fake_resolver("127.0.0.1"),
            )
    assert receiver.seen == []


def test_tls_checks_the_url_host_name_not_the_address(
    tls: tuple[Path, Path, Path], trust_ca: None
) -> None:
    # the certificate is for hooks.kreaserve.test; another name pinned to the same server fails
    receiver = handler()
    other = "other.kreaserve.test"
    with https_server(receiver, tls[1], tls[2]) as port:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|mismatch"):
            post_pinned(
                f"https://{other}:{port}/",
                b"{}",
                {},
                timeout=5,
                allow_hosts=frozenset({other}),
                resolver=fake_resolver("127.0.0.1"),
            )
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|mismatch"):
            post_pinned(
                f"https://127.0.0.1:{port}/",
                b"{}",
                {},
                timeout=5,
                allow_hosts=frozenset({"127.0.0.1"}),
            )
    assert receiver.seen == []


class RedirectingHandler(Handler):
    def answer(self) -> None:
        self.send_response(302)
        self.send_header("location", f"https://{TEST_HOST}:{self.server.server_address[1]}/next")
        self.send_header("content-length", "0")
        self.end_headers()


def test_a_redirect_is_not_followed(tls: tuple[Path, Path, Path], trust_ca: None) -> None:
    receiver = handler(RedirectingHandler)
    with https_server(receiver, tls[1], tls[2]) as port:
        response = post_pinned(
            f"https://{TEST_HOST}:{port}/first",
            b"{}",
            {},
            timeout=5,
            allow_hosts=frozenset({TEST_HOST}),
            resolver=fake_resolver("127.0.0.1"),
        )
    assert response.status_code == 302
    assert response.headers["location"].endswith("/next")
    assert [r["path"] for r in receiver.seen] == ["/first"]


class SilentHandler(Handler):
    release = threading.Event()

    def answer(self) -> None:
        self.release.wait(10)


class DrippingHandler(Handler):
    """Answers at once, then sends the body one byte every 0.2 s: each read is quick, the
    whole answer is slow."""

    release = threading.Event()

    def answer(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "100")
        self.end_headers()
        self.wfile.flush()
        for _ in range(100):
            if self.release.wait(0.2):
                return
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return


@pytest.mark.timing
@pytest.mark.parametrize("base", [SilentHandler, DrippingHandler])
def test_the_time_limit_covers_the_whole_attempt(
    base: type[Handler], tls: tuple[Path, Path, Path], trust_ca: None
) -> None:
    receiver = handler(base, release=threading.Event())
    try:
        with https_server(receiver, tls[1], tls[2]) as port:
            started = time.monotonic()
            with pytest.raises(httpx.TimeoutException):
                post_pinned(
                    f"https://{TEST_HOST}:{port}/",
                    b"{}",
                    {},
                    timeout=1,
                    allow_hosts=frozenset({TEST_HOST}),
                    resolver=fake_resolver("127.0.0.1"),
                )
            elapsed = time.monotonic() - started
            receiver.release.set()
    finally:
        receiver.release.set()
    assert 0.9 <= elapsed < 3.0  # 1 s limit; without it the dripping answer takes 20 s
    assert len(receiver.seen) == 1


class BigHandler(Handler):
    def answer(self) -> None:
        body = b"y" * (MAX_RESPONSE_BYTES * 3)
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass


def test_a_large_answer_is_cut(tls: tuple[Path, Path, Path], trust_ca: None) -> None:
    receiver = handler(BigHandler)
    with https_server(receiver, tls[1], tls[2]) as port:
        response = post_pinned(
            f"https://{TEST_HOST}:{port}/",
            b"{}",
            {},
            timeout=5,
            allow_hosts=frozenset({TEST_HOST}),
            resolver=fake_resolver("127.0.0.1"),
        )
    assert response.status_code == 200
    assert response.content == b"y" * MAX_RESPONSE_BYTES


# --- DNS rebinding ----------------------------------------------------------------------------


def test_rebinding_cannot_move_the_request_off_the_checked_address(
    tls: tuple[Path, Path, Path], trust_ca: None
) -> None:
    # first answer: the receiver (127.0.0.1, allowed for the test host); every later answer:
    # somewhere else. The request must arrive, so only the first answer was used.
    receiver = handler()
    resolver = fake_resolver("127.0.0.1", "192.0.2.1")
    with https_server(receiver, tls[1], tls[2]) as port:
        response = post_pinned(
            f"https://{TEST_HOST}:{port}/",
            b"{}",
            {},
            timeout=5,
            allow_hosts=frozenset({TEST_HOST}),
            resolver=resolver,
        )
    assert response.status_code == 200
    assert len(receiver.seen) == 1
    assert resolver.calls == [(TEST_HOST, port)]


@pytest.fixture()
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every address a TCP connection is opened to; each one is refused."""
    opened: list[tuple] = []

    def create_connection(address: tuple, *args: object, **kwargs: object) -> socket.socket:
        opened.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return opened


def test_the_connection_goes_to_the_checked_public_address(connections: list[tuple]) -> None:
    # a public answer, then 127.0.0.1 for anyone who asks again: only the first is used
    resolver = fake_resolver("93.184.216.34", "127.0.0.1")
    with pytest.raises(httpx.ConnectError):
        post_pinned("https://rebind.example/hook", b"{}", {}, timeout=5, resolver=resolver)
    assert connections == [("93.184.216.34", 443)]
    assert resolver.calls == [("rebind.example", 443)]


def test_every_checked_address_is_tried_in_order(connections: list[tuple]) -> None:
    resolver = fake_resolver(["93.184.216.34", "2606:2800:220:1:248:1893:25c7:1946"])
    with pytest.raises(httpx.ConnectError):
        post_pinned("https://example.com:8443/hook", b"{}", {}, timeout=5, resolver=resolver)
    assert connections == [("93.184.216.34", 8443), ("2606:2800:220:1:248:1893:25c7:1946", 8443)]


@pytest.mark.parametrize(
    "answer", ["127.0.0.1", ["93.184.216.34", "10.0.0.1"], "169.254.169.254", "::ffff:127.0.0.1"]
)
def test_no_connection_is_opened_to_a_refused_host(
    answer: str | list[str], connections: list[tuple]
) -> None:
    with pytest.raises(UnsafeURLError, match=INTERNAL):
        post_pinned("https://evil.example/hook", b"{}", {}, resolver=fake_resolver(answer))
    assert connections == []


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/",
        "https://2130706433/",
        "https://[::ffff:7f00:1]/",
        "https://localhost/",
        "http://example.com/",
        "https://u:p@example.com/",
    ],
)
def test_post_pinned_checks_the_url_before_resolving(url: str, connections: list[tuple]) -> None:
    resolver = fake_resolver("93.184.216.34")
    with pytest.raises(UnsafeURLError):
        post_pinned(url, b"{}", {}, resolver=resolver)
    assert resolver.calls == []
    assert connections == []
