"""The dead-letter sink (streams.deadletters): what a rejected message's letter names, and that none is dropped."""

from __future__ import annotations

import asyncio

import faust
import pytest
from aiokafka.errors import KafkaTimeoutError
from tenacity import wait_none

from schemas import DeadLetter, decode
from streams.deadletters import DeadLetterSink, RecordOrigin, salvaged_tenant
from streams.settings import Settings


@pytest.mark.parametrize(
    ("raw", "tenant"),
    [
        (b'{"tenant": "demo", "type": 3}', "demo"),
        (b'{"tenant": "Demo Shop"}', None),  # not a tenant id: a dead letter names no tenant then
        (b'{"tenant": "' + b"a" * 65 + b'"}', None),
        (b'{"tenant": 7}', None),
        (b"[1, 2]", None),
        (b"\xff\xfe", None),
        (None, None),
    ],
)
def test_a_rejected_message_names_its_tenant_only_if_it_could_be_one(raw: bytes | None, tenant: str | None) -> None:
    assert salvaged_tenant(raw) == tenant


def test_a_dead_letter_the_broker_refuses_is_sent_again_before_the_agent_goes_on() -> None:
    """Not dropped with a log line: the agent acknowledges the message once send returns."""
    class FlakyTopic:
        def __init__(self) -> None:
            self.attempts = 0
            self.sent: list[bytes] = []

        async def send(self, key: bytes | None, value: bytes) -> None:
            self.attempts += 1
            if self.attempts <= 2:
                raise KafkaTimeoutError("broker away")
            self.sent.append(value)

    sink = DeadLetterSink(faust.App("t-dead", broker="kafka://127.0.0.1:1"), Settings(tenants=("demo",)), "pixel")
    sink.retry_wait = wait_none()
    sink.topic = FlakyTopic()  # type: ignore[assignment]
    origin = RecordOrigin("shoprank.pixel", 2, 41, b"k", b"{oops", None)
    asyncio.run(sink.send(origin, "invalid_json", "not JSON", tenant="demo"))
    assert sink.topic.attempts == 3 and len(sink.topic.sent) == 1
    letter = decode(DeadLetter, sink.topic.sent[0])
    assert (letter.value, letter.source_offset, letter.reason) == (b"{oops", 41, "invalid_json")
    assert sink.counts["dead_letter_send_retries"] == 2
