"""The embedded broker: starts, answers, stops, and never outlives its parent."""

from __future__ import annotations

import asyncio
import functools

import pytest
from aiokafka import AIOKafkaConsumer

from schemas.topics import TOPICS
from streams.broker import EmbeddedBroker
from streams.exceptions import BrokerStartError
from streams.kafka import broker_answers, describe_topics, ensure_topics
from streams.supervise import free_port
from tests.conftest import child_outlives_killed_parent

pytestmark = pytest.mark.integration


def _answers(bootstrap: str) -> bool:
    return asyncio.run(broker_answers(bootstrap, 1.0))


def test_start_answer_stop() -> None:
    b = EmbeddedBroker(port=free_port()).start()
    try:
        assert _answers(b.bootstrap)
        with pytest.raises(BrokerStartError, match="already answers"):
            EmbeddedBroker(port=b.port).start()
    finally:
        b.stop()
    assert not b.running()
    assert not _answers(b.bootstrap)


def test_topics_are_created_idempotently_with_their_partition_counts(broker: EmbeddedBroker) -> None:
    created = asyncio.run(ensure_topics(broker.bootstrap, "idem."))
    assert sorted(created) == sorted(spec.full_name("idem.") for spec in TOPICS.values())
    assert asyncio.run(ensure_topics(broker.bootstrap, "idem.")) == []
    parts = asyncio.run(describe_topics(broker.bootstrap, created))
    assert parts["idem.shoprank.pixel"] == 4 and parts["idem.shoprank.rules"] == 1


def test_broker_dies_with_its_parent_even_on_kill_9() -> None:
    port = free_port()
    code = (
        "import time; from streams.broker import EmbeddedBroker; "
        f"b = EmbeddedBroker(port={port}).start(); print('up', b.process.pid, flush=True); time.sleep(120)"
    )
    alive, line = child_outlives_killed_parent(code, within_s=10)
    assert line.startswith("up"), line
    assert not alive, "tansu outlived its killed parent"


def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    """The broker's config entries of ``topic`` (DescribeConfigs: asking never creates the topic)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def go() -> dict[str, str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            resp = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            return {name: value for name, value, *_ in resp[0].resources[0][4]}
        finally:
            await admin.close()

    return asyncio.run(go())


def test_event_topics_get_a_retention_and_state_topics_are_compacted(broker: EmbeddedBroker) -> None:
    asyncio.run(ensure_topics(broker.bootstrap, "ret.", retention_ms=3_600_000))
    configs = functools.partial(topic_configs, broker.bootstrap)

    assert configs("ret.shoprank.pixel").get("retention.ms") == "3600000"
    for name in ("privacy", "rankers"):
        state = configs(f"ret.shoprank.{name}")
        assert state.get("cleanup.policy") == "compact" and "retention.ms" not in state, name


def _ask_for(bootstrap: str, topic: str) -> set[int] | None:
    """What a reader of ``topic`` learns from the broker when it asks for its partitions."""

    async def go() -> set[int] | None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer._client.add_topic(topic)
            await consumer._client.force_metadata_update()
            return consumer.partitions_for_topic(topic)
        finally:
            await consumer.stop()

    return asyncio.run(go())


def test_worker_clients_never_create_a_topic_by_asking_about_it(
        broker: EmbeddedBroker, request: pytest.FixtureRequest) -> None:
    # Without the patch the broker creates the topic it is asked about, with its own defaults: the
    # race that gave the rules and privacy topics 4 partitions after a broker restart.
    assert _ask_for(broker.bootstrap, "auto.asked") == {0, 1, 2, 3}
    assert asyncio.run(describe_topics(broker.bootstrap, ["auto.asked"])) == {"auto.asked": 4}

    request.getfixturevalue("no_autocreate")  # from here on, as in the worker
    assert _ask_for(broker.bootstrap, "noauto.asked") is None
    assert "noauto.asked" not in asyncio.run(describe_topics(broker.bootstrap))
    # Topics created from their specs are still seen, with their partition counts.
    asyncio.run(ensure_topics(broker.bootstrap, "noauto.", [TOPICS["rules"]]))
    assert _ask_for(broker.bootstrap, "noauto.shoprank.rules") == {0}
