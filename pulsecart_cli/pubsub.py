"""Pub/Sub topology (the seed's three topic pairs) and clients. Works against real Pub/Sub and, with
PUBSUB_EMULATOR_HOST set, the emulator."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pulsecart_cli.errors import ConfigError, ServiceError, first_line

if TYPE_CHECKING:  # at run time google.cloud is imported where it is used
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

TOPICS = ("commerce-events", "user-actions", "system-events")
TOPIC_PREFIX = "pulsecart."
CONSUMER_MAX_DELIVERY_ATTEMPTS = 5
RECONCILER_ACK_DEADLINE_S = 60


@dataclass(frozen=True)
class TopicPair:
    """An original topic, its dead-letter topic, and the reconciler's subscription on the latter."""

    short: str

    @property
    def original(self) -> str:
        return f"{TOPIC_PREFIX}{self.short}"

    @property
    def dead_letter(self) -> str:
        return f"{self.original}.dead-letter"

    @property
    def reconciler_subscription(self) -> str:
        return f"sub-{self.dead_letter}-reconciler"

    @property
    def consumer_subscription(self) -> str:
        return f"sub-{self.original}"


def resolve_topics(topic: str) -> list[TopicPair]:
    """`all`, a short name (commerce-events) or a full topic name (pulsecart.commerce-events)."""
    if topic == "all":
        return [TopicPair(t) for t in TOPICS]
    short = topic.removeprefix(TOPIC_PREFIX).removesuffix(".dead-letter")
    if short not in TOPICS:
        raise ConfigError(f"unknown topic {topic!r}: expected all, {', '.join(TOPICS)} "
                          f"or their full names ({TOPIC_PREFIX}{TOPICS[0]})")
    return [TopicPair(short)]


def resolve_project(project: str | None) -> str:
    value = project or os.environ.get("PULSECART_GCP_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not value:
        raise ConfigError("no GCP project: pass --project or set PULSECART_GCP_PROJECT or GOOGLE_CLOUD_PROJECT")
    return value


@dataclass
class Clients:
    project: str
    publisher: "PublisherClient"
    subscriber: "SubscriberClient"

    def topic_path(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def subscription_path(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"


def connect(project: str) -> Clients:
    """Clients with message ordering enabled on the publisher."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import pubsub_v1

    try:
        publisher = pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
        subscriber = pubsub_v1.SubscriberClient()
    except DefaultCredentialsError as exc:
        raise ServiceError("no Google credentials for Pub/Sub",
                           hint="set GOOGLE_APPLICATION_CREDENTIALS, or PUBSUB_EMULATOR_HOST for the emulator") from exc
    return Clients(project, publisher, subscriber)


def service_error(exc: Exception, what: str) -> ServiceError:
    return ServiceError(f"Pub/Sub refused to {what}: {type(exc).__name__}: {first_line(exc)}")


def setup(clients: Clients, pairs: list[TopicPair]) -> list[str]:
    """Create topics, dead-letter topics, consumer and reconciler subscriptions; idempotent.
    Returns what was created."""
    from google.api_core import exceptions as gexc

    created: list[str] = []

    def ensure(kind: str, create: Callable[..., object], name: str, request: dict[str, Any]) -> None:
        try:
            create(request=request)
            created.append(f"{kind} {name}")
        except gexc.AlreadyExists:
            pass
        except gexc.GoogleAPICallError as exc:
            raise service_error(exc, f"create {kind} {name}") from exc

    for pair in pairs:
        for topic in (pair.original, pair.dead_letter):
            ensure("topic", clients.publisher.create_topic, topic, {"name": clients.topic_path(topic)})
        ensure("subscription", clients.subscriber.create_subscription, pair.consumer_subscription, {
            "name": clients.subscription_path(pair.consumer_subscription),
            "topic": clients.topic_path(pair.original),
            "enable_message_ordering": True,
            "dead_letter_policy": {"dead_letter_topic": clients.topic_path(pair.dead_letter),
                                   "max_delivery_attempts": CONSUMER_MAX_DELIVERY_ATTEMPTS},
        })
        ensure("subscription", clients.subscriber.create_subscription, pair.reconciler_subscription, {
            "name": clients.subscription_path(pair.reconciler_subscription),
            "topic": clients.topic_path(pair.dead_letter),
            "ack_deadline_seconds": RECONCILER_ACK_DEADLINE_S,
        })
    return created
