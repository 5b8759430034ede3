"""Shared fixtures: TLS certificates for loopback servers."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
import trustme


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_server_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    cert = tls_ca.issue_cert("localhost", "127.0.0.1", "::1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


@pytest.fixture(scope="session")
def tls_client_context(tls_ca: trustme.CA) -> Iterator[ssl.SSLContext]:
    ctx = ssl.create_default_context()
    tls_ca.configure_trust(ctx)
    yield ctx
