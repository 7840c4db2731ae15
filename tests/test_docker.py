"""docker/ cannot run here; check that the compose file parses and wires what the README promises."""

from __future__ import annotations

from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def test_compose_has_kafka_kraft_qdrant_and_two_workers() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["qdrant"]["image"].startswith("qdrant/qdrant")
    workers = [s for name, s in services.items() if name.startswith("worker")]
    assert len(workers) >= 2
    for w in workers:
        assert w["environment"]["SHOPRANK_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert w["command"] == ["worker"]
    host_ports = [p.split(":")[0] for w in workers for p in w["ports"]]
    assert len(set(host_ports)) == len(host_ports), "each worker needs its own host port"


def test_dockerfile_installs_the_package_and_runs_a_worker() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "pip install" in text and 'ENTRYPOINT ["shoprank"]' in text and 'CMD ["worker"]' in text
    for pkg in ("schemas", "streams", "models"):
        assert f"COPY {pkg}" in text


def test_workers_use_the_server_store_and_the_mounted_models() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        if name.startswith("worker"):
            env = svc["environment"]
            assert env["SHOPRANK_STORE_KIND"] == "qdrant" and env["SHOPRANK_STORE_URL"].startswith("http://qdrant")
            mounts = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in svc.get("volumes", [])]
            assert env["SHOPRANK_MODELS_DIR"] in mounts
