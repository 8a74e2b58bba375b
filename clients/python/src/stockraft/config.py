"""Where the servers are and how to open a channel to one.

Every channel gets clients/service_config.json (shipped inside the
package), so gRPC itself retries UNAVAILABLE and RESOURCE_EXHAUSTED with
backoff, honours the server's `grpc-retry-pushback-ms` trailer and gives
each call a 5 s deadline. That is safe because every mutation carries the
caller's id and is applied at most once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import grpc

# The same variables the `stockraft` CLI reads.
ENV_SERVER = "STOCKRAFT_SERVER"
ENV_TOKEN = "STOCKRAFT_TOKEN"
ENV_TLS_CA = "STOCKRAFT_TLS_CA"
DEFAULT_SERVER = "127.0.0.1:50051"
# The method config's timeout, for the calls it does not cover (streamed
# operations) and for callers who ask what it is.
DEFAULT_TIMEOUT = 5.0


def addresses(value: list[str] | str | None) -> list[str]:
    """HOST:PORT addresses from a list, a comma-separated string, or
    STOCKRAFT_SERVER, in that order of preference."""
    if value is None:
        value = os.environ.get(ENV_SERVER) or DEFAULT_SERVER
    if isinstance(value, str):
        value = value.split(",")
    found = [a.strip() for a in value if a.strip()]
    if not found:
        raise ValueError("no server address given")
    return found


def service_config() -> str:
    return resources.files("stockraft").joinpath("_proto/service_config.json").read_text()


def _read(value: bytes | str | Path | None) -> bytes | None:
    # PEM given as bytes, or as a path to a file.
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


@dataclass(frozen=True)
class ChannelSettings:
    """What every channel of a client shares: credentials and options."""

    token: str | None = None
    ca_cert: bytes | str | Path | None = None
    client_cert: bytes | str | Path | None = None
    client_key: bytes | str | Path | None = None
    # TLS host name to check when it differs from the address's host.
    server_name: str | None = None

    @classmethod
    def from_env(cls, token=None, ca_cert=None, **rest) -> "ChannelSettings":
        return cls(
            token=token if token is not None else os.environ.get(ENV_TOKEN),
            ca_cert=ca_cert if ca_cert is not None else os.environ.get(ENV_TLS_CA),
            **rest,
        )

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        # Sent on every call rather than as call credentials: gRPC refuses
        # call credentials on plaintext channels, and a token on loopback
        # plaintext is a setup the server allows.
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def options(self) -> list[tuple[str, object]]:
        options: list[tuple[str, object]] = [
            ("grpc.service_config", service_config()),
            ("grpc.enable_retries", 1),
        ]
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.ca_cert is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_cert),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )

    def open(self, address: str, aio: bool = False) -> grpc.Channel:
        module = grpc.aio if aio else grpc
        credentials = self.credentials()
        if credentials is None:
            return module.insecure_channel(address, options=self.options())
        return module.secure_channel(address, credentials, options=self.options())
