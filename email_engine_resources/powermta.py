"""PowerMTA as a :class:`~email_engine_resources.delivery.MessageTransport` (SMTP injection).

Built from plain values; the campaigns code maps a tenant's ``transports:`` entry
(``kind: powermta``) onto the constructor, since resources never import the tenant model.
The SMTP work and what each status means are in :mod:`.powermta_client`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from email_engine_resources.delivery import (
    DEFAULT_PIPELINE_DEPTH,
    DeliveryResult,
    MessageSource,
    OutgoingMessage,
)
from email_engine_resources.powermta_client import InjectionConfig, deliver_from, inject


@dataclass(frozen=True)
class PowerMtaSmtpTransport:
    """Injects messages into PowerMTA over ``connections`` reused SMTP sessions, each holding at most
    ``pipeline_depth`` messages in flight."""

    name: str
    host: str
    bounce_address: str
    port: int = 25
    virtual_mta: str | None = None
    connections: int = 4
    pipeline_depth: int = DEFAULT_PIPELINE_DEPTH
    timeout_seconds: float = 30.0
    retries: int = 3
    retry_backoff_seconds: float = 1.0
    allow_private: bool = False
    helo_name: str = ""
    x_envid_header: bool = True

    def __post_init__(self) -> None:
        self.config()  # a bad value fails here, naming the field

    def config(self) -> InjectionConfig:
        return InjectionConfig(
            host=self.host,
            bounce_address=self.bounce_address,
            port=self.port,
            virtual_mta=self.virtual_mta,
            connections=self.connections,
            pipeline_depth=self.pipeline_depth,
            timeout_s=self.timeout_seconds,
            retries=self.retries,
            retry_backoff_s=self.retry_backoff_seconds,
            allow_private=self.allow_private,
            helo_name=self.helo_name,
            x_envid_header=self.x_envid_header,
        )

    def deliver(self, messages: Sequence[OutgoingMessage]) -> list[DeliveryResult]:
        """One result per message: ``sent``, ``failed`` (with the reply) or ``unknown``."""
        return inject(messages, self.config())

    def deliver_from(self, source: MessageSource) -> None:
        """Each connection takes messages from ``source`` (the ledger) as it is ready for them."""
        deliver_from(source, self.config())
