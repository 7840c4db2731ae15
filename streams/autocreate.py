"""The worker's Kafka clients never create a topic by asking about it.

A Metadata request names the topics it wants, and since Kafka 0.11 it also says whether the broker
may create the missing ones; aiokafka always says yes. Both Apache Kafka (``auto.create.topics.enable``
is on by default) and Tansu then create the topic with the broker's defaults: its partition count (4
on Tansu), not compacted, no retention of ours. After the embedded broker lost its log (and our
topics with it), the worker's rules and privacy followers asked for their topics before the topic
guard (streams.app) could create them, and got 4-partition, uncompacted topics that no later check
would repair (caught by CI: tests/test_faults_more.py, the in-flight broker restart).

:func:`install` makes the metadata requests of every aiokafka client in the process (Faust's included)
ask the broker not to create anything: a missing topic stays missing, its readers retry, and only
:func:`streams.kafka.ensure_topics` creates topics, from their specs. Installed by the worker only;
short-lived tools create what they need with ``ensure_topics`` first.
"""

from __future__ import annotations

from aiokafka import client as aiokafka_client
from aiokafka.protocol.metadata import MetadataRequest

__all__ = ["NoAutoCreateMetadataRequest", "install"]


class NoAutoCreateMetadataRequest(MetadataRequest):
    """A Metadata request that asks the broker not to create the topics it names (v4 and later)."""

    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = None) -> None:
        super().__init__(topics, False if allow_auto_topic_creation is None else allow_auto_topic_creation)


def install() -> None:
    """Patch the aiokafka client's Metadata request for the rest of the process (idempotent)."""
    aiokafka_client.MetadataRequest = NoAutoCreateMetadataRequest  # type: ignore[misc]
