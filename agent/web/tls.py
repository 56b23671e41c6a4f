"""The web page's certificate: the configured one, or a self-signed one made once in data_dir."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket
import ssl
import subprocess
from pathlib import Path

from agent.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["Certificate", "load_certificate", "local_address"]

VALID_DAYS = 3650
"""A self-signed certificate is pinned by its fingerprint, not by an expiry date."""


class Certificate:
    """A certificate and key on disk, with what a technician checks: the SHA-256 fingerprint."""

    def __init__(self, cert: Path, key: Path, *, self_signed: bool) -> None:
        self.cert = cert
        self.key = key
        self.self_signed = self_signed
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        digest = hashlib.sha256(der).hexdigest().upper()
        self.fingerprint = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
        """As browsers show it: ``AB:CD:...`` (SHA-256 of the DER certificate)."""

    def context(self) -> ssl.SSLContext:
        """A server context: TLS 1.2 or newer.

        Raises:
            ConfigError: the key does not match or cannot be read.
        """
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError([f"web.cert_file {self.cert} / web.key_file {self.key}: cannot be "
                               f"used: {err}"]) from err
        return ctx


def local_address() -> str:
    """This host's address on its default route (no packet is sent), else its hostname."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
            return str(sock.getsockname()[0])
        except OSError:
            return socket.gethostname()


def _self_signed(directory: Path, names: list[str]) -> tuple[Path, Path]:
    """Make ``web.crt``/``web.key`` (ECDSA P-256) with ``names`` as subject alternative names.

    Raises:
        OSError: openssl is missing or failed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "web.crt", directory / "web.key"
    sans = []
    for name in dict.fromkeys(names):
        try:
            ipaddress.ip_address(name)
            sans.append(f"IP:{name}")
        except ValueError:
            sans.append(f"DNS:{name}")
    tmp_key = key.with_suffix(".key.tmp")
    old = os.umask(0o077)  # the key is readable by the service user only
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(tmp_key), "-out", str(cert.with_suffix(".crt.tmp")),
             "-days", str(VALID_DAYS), "-subj", f"/CN={names[0]}/O=store-edge-agent",
             "-addext", "subjectAltName=" + ",".join(sans)],
            check=True, capture_output=True, text=True, timeout=60,
        )
    except FileNotFoundError as err:
        raise OSError("openssl is not installed: it makes the web page's certificate") from err
    except subprocess.CalledProcessError as err:
        raise OSError(f"openssl could not make the web page's certificate: {err.stderr}") from err
    finally:
        os.umask(old)
    tmp_key.replace(key)
    cert.with_suffix(".crt.tmp").replace(cert)
    return cert, key


def load_certificate(cert_file: Path | None, key_file: Path | None, data_dir: Path,
                     names: list[str]) -> Certificate:
    """The configured certificate, or the self-signed one in ``data_dir/web`` (made on first
    start for ``names``: host names and addresses the page is reached at).

    Raises:
        ConfigError: a configured file is missing or not a certificate; OSError: the
        self-signed one cannot be made.
    """
    if cert_file is not None and key_file is not None:
        try:
            return Certificate(cert_file, key_file, self_signed=False)
        except (OSError, ValueError) as err:
            raise ConfigError([f"web.cert_file {cert_file}: not a PEM certificate: {err}"]) \
                from err
    directory = data_dir / "web"
    cert, key = directory / "web.crt", directory / "web.key"
    if not (cert.exists() and key.exists()):
        cert, key = _self_signed(directory, names)
        log.info("web: made a self-signed certificate %s for %s", cert, ", ".join(names))
    return Certificate(cert, key, self_signed=True)
