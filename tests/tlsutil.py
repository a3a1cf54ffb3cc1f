"""Real TLS for tests: a throwaway certificate authority and server certificate (made with the
`openssl` command-line tool), and an HTTPS server on 127.0.0.1 in a thread.

    ca, cert, key = make_ca_and_cert(tmp_path, ["hooks.kreaserve.test"])
    with https_server(Handler, cert, key) as port:
        ...  # trust `ca` (e.g. SSL_CERT_FILE=ca) and call https://hooks.kreaserve.test:<port>/

A handler can read the TLS server name the client sent (SNI) as `self.request.sni_name`.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["https_server", "make_ca_and_cert"]

_DAYS = "2"


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:  # pragma: no cover
        raise RuntimeError("the openssl command-line tool is needed to make test certificates")
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:  # pragma: no cover
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _san(name: str) -> str:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{name}"


def make_ca_and_cert(tmp_path: Path, hostnames: list[str]) -> tuple[Path, Path, Path]:
    """A new CA and a server certificate signed by it, valid for `hostnames` (names or IP
    addresses; the first is also the common name). Returns (CA certificate PEM, server
    certificate PEM, server private key PEM), all written under `tmp_path`."""
    if not hostnames:
        raise ValueError("at least one host name is needed")
    folder = Path(tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        _DAYS,
        "-subj",
        "/CN=kreaserve test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-addext",
        "subjectKeyIdentifier=hash",
        cwd=folder,
    )
    _openssl(
        "req",
        *ec,
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        f"/CN={hostnames[0]}",
        cwd=folder,
    )
    (folder / "server.ext").write_text(
        "subjectAltName=" + ",".join(_san(name) for name in hostnames) + "\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        _DAYS,
        "-extfile",
        "server.ext",
        cwd=folder,
    )
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


class _TLSServer(http.server.ThreadingHTTPServer):
    """Accepts in the serving thread, shakes hands in each request's own thread (so a client
    that never speaks TLS blocks nobody), and stays quiet about clients that give up."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, handler_class: type, context: ssl.SSLContext) -> None:
        self.ssl_context = context
        super().__init__(("127.0.0.1", 0), handler_class)

    def finish_request(self, request: socket.socket, client_address: tuple) -> None:
        request.settimeout(10)
        tls = self.ssl_context.wrap_socket(request, server_side=True)
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request: object, client_address: tuple) -> None:
        pass  # a refused handshake or a client that hung up is what some tests are about


@contextlib.contextmanager
def https_server(
    handler_class: type[http.server.BaseHTTPRequestHandler], cert_path: Path, key_path: Path
) -> Iterator[int]:
    """Serve `handler_class` over HTTPS on 127.0.0.1 with the given certificate; yields the
    port. The server is shut down and its socket closed on exit."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_path), str(key_path))

    def remember_sni(sock: ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext) -> None:
        sock.sni_name = name  # type: ignore[attr-defined]

    context.sni_callback = remember_sni
    server = _TLSServer(handler_class, context)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="https-test-server",
        daemon=True,
    )
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
