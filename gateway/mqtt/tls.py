"""`mqtt.tls` -> an `ssl.SSLContext` for the broker connection (or None without TLS)."""

from __future__ import annotations

import logging
import ssl

from gateway.config import MqttSection
from gateway.errors import TransientLinkError

log = logging.getLogger(__name__)


def ssl_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None, *, insecure: bool
) -> ssl.SSLContext:
    """TLS settings -> a client context (the system's CAs unless a CA file is given)."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def tls_context(cfg: MqttSection) -> ssl.SSLContext | None:
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
        )
    except (OSError, ssl.SSLError) as exc:
        raise TransientLinkError(
            f"cannot load the TLS files: {exc}",
            kind="tls",
            advice="check mqtt.tls (CA, client certificate, key)",
        ) from exc
