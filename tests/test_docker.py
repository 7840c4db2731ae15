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


def test_prometheus_scrapes_every_worker_and_grafana_reads_prometheus() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"prometheus", "grafana"} <= set(services)
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in prom["scrape_configs"])
    workers = {name: svc for name, svc in services.items() if name.startswith("worker")}
    assert targets == {f"{name}:{svc['environment']['SHOPRANK_WORKER_WEB_PORT']}" for name, svc in workers.items()}
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services["prometheus"]["volumes"] if v.startswith("./")}
    assert mounts["./prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["url"] == "http://prometheus:9090" and "9090:9090" in services["prometheus"]["ports"]
    grafana_mounts = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"] if v.startswith("./")}
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/shoprank.yaml").read_text())
    assert grafana_mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_dashboard_queries_only_metrics_the_workers_export() -> None:
    import json
    import re

    from prometheus_client.parser import text_string_to_metric_families

    from schemas import SearchResult
    from streams import metrics

    # Touch every labelled instrument once so its series render.
    metrics.EVENTS.labels("a").inc(0)
    metrics.DEAD_LETTERS.labels("a", "r").inc(0)
    metrics.observe_search([SearchResult(request_id="x", tenant="demo", answered_at=1, timings_ms={"s": 1.0})])
    metrics.set_model_version("embedder", "v")
    metrics.CONSUMER_LAG.labels("g", "t", "0").set(0)
    metrics.GROUP_STATUS.labels("g").state("OK")
    metrics.INDEX_POINTS.labels("demo").set(0)
    exported = {s.name for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples}

    dashboard = json.loads((DOCKER / "grafana/dashboards/shoprank.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bshoprank_[a-z_]+", e)}
    assert used, "the dashboard queries nothing"
    assert used <= exported, f"dashboard queries metrics nobody exports: {used - exported}"
    for wanted in ("consumer_lag", "agent_events", "search_stage_seconds", "dead_letters", "model_version",
                   "index_points", "consumer_group_status"):
        assert any(wanted in m for m in used), f"no panel shows {wanted}"
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} == {"shoprank-prometheus"}


def test_retrainer_shares_the_workers_models_and_can_write_them() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    trainer = services["retrainer"]
    assert trainer["command"] == ["models", "retrain"] and trainer["build"]["args"]["EXTRAS"] == "[train]"
    [mount] = [v for v in trainer["volumes"] if v["target"] == trainer["environment"]["SHOPRANK_MODELS_DIR"]]
    assert not mount.get("read_only") and mount["source"] == "../.shoprank/models"
    worker_mounts = {v["source"] for v in services["worker-1"]["volumes"] if isinstance(v, dict)}
    assert mount["source"] in worker_mounts  # the pointer it moves is the one the workers watch
    assert trainer["environment"]["SHOPRANK_TENANTS"] == services["worker-1"]["environment"]["SHOPRANK_TENANTS"]
    assert 'ARG EXTRAS' in (DOCKER / "Dockerfile").read_text()
