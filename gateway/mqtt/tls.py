"""`mqtt.tls` -> an `ssl.SSLContext` for the broker connection (or None without TLS).

The same settings serve every server of `mqtt.servers`; a server's `tls_server_name` replaces
the name its certificate is checked against (and the SNI). paho wraps the socket with
`server_hostname=<host it connects to>` and offers no way to change that, so the name is
swapped in by the context itself (`_NamedContext.wrap_socket`).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from gateway.config import MqttSection
from gateway.errors import TransientLinkError

log = logging.getLogger(__name__)


class _NamedContext(ssl.SSLContext):
    """A client context that checks (and sends as SNI) `server_name`, whatever host name the
    caller passes."""

    server_name: str

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(*args, **kwargs)


def ssl_context(
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    *,
    insecure: bool,
    server_name: str | None = None,
) -> ssl.SSLContext:
    """TLS settings -> a client context (the system's CAs unless a CA file is given)."""
    if server_name is None:
        context = ssl.create_default_context(cafile=ca_file)
    else:  # what create_default_context does, in the subclass
        named = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
        named.server_name = server_name
        if ca_file is None:
            named.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            named.load_verify_locations(cafile=ca_file)
        context = named
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def tls_context(cfg: MqttSection, server_name: str | None = None) -> ssl.SSLContext | None:
    tls = cfg.tls
    if tls is None:
        return None
    if tls.insecure:
        log.warning(
            "mqtt.tls.insecure is set: the broker's certificate and host name are NOT checked; "
            "anyone on the path can read and change the gateway's traffic"
        )
    try:
        return ssl_context(
            str(tls.ca_file) if tls.ca_file else None,
            str(tls.cert_file) if tls.cert_file else None,
            str(tls.key_file) if tls.key_file else None,
            insecure=tls.insecure,
            server_name=server_name,
        )
    except (OSError, ssl.SSLError) as exc:
        raise TransientLinkError(
            f"cannot load the TLS files: {exc}",
            kind="tls",
            advice="check mqtt.tls (CA, client certificate, key)",
        ) from exc
