"""The CLI as a user meets it: one-line errors with a fix, non-zero exits, no tracebacks."""

from __future__ import annotations

import orjson
import pytest

from schemas.topics import TOPICS

from streams.broker import EmbeddedBroker
from streams.sample_events import valid_events
from streams.supervise import free_port
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def _one_line_error(result, code: int) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("shoprank: ")
    return lines[0]


def test_bad_flag() -> None:
    line = _one_line_error(run_cli("worker", "--no-such-flag"), 2)
    assert "--no-such-flag" in line and "--help" in line


def test_bad_flag_value() -> None:
    line = _one_line_error(run_cli("broker", "--port", "99999999"), 2)
    assert "--port" in line


def test_unknown_command() -> None:
    _one_line_error(run_cli("frobnicate"), 2)


def test_broker_unreachable_says_what_to_do() -> None:
    line = _one_line_error(run_cli("--bootstrap", f"127.0.0.1:{free_port()}", "topics"), 1)
    assert "not reachable" in line and "SHOPRANK_KAFKA_BOOTSTRAP" in line


def test_no_embedded_broker_running_says_start_one() -> None:
    line = _one_line_error(run_cli("tail", "pixel", env={"SHOPRANK_KAFKA_EMBEDDED_PORT": str(free_port())}), 1)
    assert "shoprank broker" in line


def test_bad_files(broker: EmbeddedBroker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"SHOPRANK_KAFKA_BOOTSTRAP": broker.bootstrap}
    line = _one_line_error(run_cli("produce", "pixel", str(tmp_path / "missing.jsonl"), env=env), 1)
    assert "no such file" in line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ok": 1}\n{oops\n')
    line = _one_line_error(run_cli("produce", "pixel", str(bad), env=env), 1)
    assert "bad.jsonl:2" in line and "nothing was sent" in line
    line = _one_line_error(run_cli("produce", "no-such-topic", str(bad), env=env), 1)
    assert "known topics" in line


def test_produce_then_tail_round_trip(broker: EmbeddedBroker, prefix: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"SHOPRANK_KAFKA_BOOTSTRAP": broker.bootstrap, "SHOPRANK_KAFKA_TOPIC_PREFIX": prefix}
    events = valid_events(25, seed=3)
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(m.value for m in events) + b"\n")
    sent = run_cli("produce", "pixel", str(src), env=env)
    assert sent.returncode == 0, sent.stderr
    assert "sent 25 messages" in sent.stderr
    out = run_cli("tail", "pixel", "--meta", "--idle", "1", env=env)
    assert out.returncode == 0, out.stderr
    rows = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert sorted(r["value"]["event_id"] for r in rows) == sorted(orjson.loads(m.value)["event_id"] for m in events)
    # keyed as the contract says, so one session's events share a partition
    for r in rows:
        assert r["key"] == f"{r['value']['tenant']}:{r['value']['session_id']}"
    by_key: dict[str, set[int]] = {}
    for r in rows:
        by_key.setdefault(r["key"], set()).add(r["partition"])
    assert all(len(p) == 1 for p in by_key.values())


def test_topics_lists_and_creates(broker: EmbeddedBroker) -> None:
    env = {"SHOPRANK_KAFKA_BOOTSTRAP": broker.bootstrap, "SHOPRANK_KAFKA_TOPIC_PREFIX": "clitopics."}
    first = run_cli("topics", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == len(TOPICS)
    again = run_cli("topics", env=env)
    assert "created" not in again.stdout and again.stdout.count(" ok ") == len(TOPICS)


def test_broker_command_serves_until_sigterm() -> None:
    import asyncio
    import os
    import signal
    import subprocess
    import sys

    from streams.kafka import broker_answers

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPRANK_")}
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "broker", "--port", str(port)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        assert f"broker ready at 127.0.0.1:{port}" in line
        assert asyncio.run(broker_answers(f"127.0.0.1:{port}", 2.0))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not asyncio.run(broker_answers(f"127.0.0.1:{port}", 1.0))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_worker_without_a_model_says_how_to_make_one(broker: EmbeddedBroker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"SHOPRANK_KAFKA_BOOTSTRAP": broker.bootstrap, "SHOPRANK_MODELS_DIR": str(tmp_path)}
    line = _one_line_error(run_cli("worker", env=env), 1)
    assert "shoprank models export" in line


def test_second_worker_on_the_same_data_dir_is_refused_with_the_fix(  # type: ignore[no-untyped-def]
        broker: EmbeddedBroker, prefix: str, make_worker, model_dir, tmp_path) -> None:
    """Its tables are on disk (RocksDB): a second worker there would wait on the first's locks for good."""
    first = make_worker(prefix, app_id="one-dir")
    env = {"SHOPRANK_KAFKA_BOOTSTRAP": broker.bootstrap, "SHOPRANK_KAFKA_TOPIC_PREFIX": prefix,
           "SHOPRANK_WORKER_APP_ID": "one-dir", "SHOPRANK_WORKER_DATA_DIR": first.env["SHOPRANK_WORKER_DATA_DIR"],
           "SHOPRANK_MODELS_DIR": str(model_dir.parent), "SHOPRANK_MODELS_EMBEDDER": model_dir.name}
    line = _one_line_error(run_cli("worker", env=env), 1)
    assert "another worker is using" in line and "SHOPRANK_WORKER_DATA_DIR" in line
    assert first.get("/readyz")["ready"] is True  # the first one is untouched


def test_demo_indexes_the_bundled_real_catalogue_and_answers_queries(  # type: ignore[no-untyped-def]
        broker: EmbeddedBroker, prefix: str, int8_model_dir, tmp_path) -> None:
    """The README's main command, on the session broker: DummyJSON's products indexed, queries answered,
    by the default model (int8)."""
    env = {"SHOPRANK_KAFKA_BOOTSTRAP": broker.bootstrap, "SHOPRANK_KAFKA_TOPIC_PREFIX": prefix,
           "SHOPRANK_MODELS_DIR": str(int8_model_dir.parent), "SHOPRANK_WORKER_DATA_DIR": str(tmp_path),
           "COLUMNS": "160"}
    result = run_cli("demo", "gaming laptop", "rolex", "--events", "300", "--learn-events", "0", env=env,
                     timeout=300)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "indexed 194 products" in result.stderr
    laptops = {"New DELL XPS 13 9300 Laptop", "Lenovo Yoga 920", "Huawei Matebook X Pro",
               "Asus Zenbook Pro Dual Screen Laptop", "Apple MacBook Pro 14 Inch Space Grey"}
    answers = result.stdout.split("“rolex”")
    assert len(answers) == 2, result.stdout
    laptop_rows = [line for line in answers[0].splitlines() if line.startswith("│ 1 ")]
    assert laptop_rows and any(name in laptop_rows[0] for name in laptops), answers[0]
    rolex_rows = [line for line in answers[1].splitlines() if line.startswith("│ 1 ")]
    assert rolex_rows and "Rolex" in rolex_rows[0], answers[1]
    assert "brand: " in result.stdout and "category: " in result.stdout  # facets
    assert "USD" in result.stdout  # prices
    assert "dead letters:" in result.stdout and "counted (expected" in result.stdout
