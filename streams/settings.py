"""All of shoprank's settings, in one typed, frozen object.

Each field reads an environment variable named in its description; CLI flags override them at the
entry point (:func:`load_settings`). Nothing else in shoprank reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "EventLoop",
    "KafkaSettings",
    "LogLevel",
    "ModelSettings",
    "PixelSettings",
    "RetrainSettings",
    "SecuritySettings",
    "Settings",
    "StoreSettings",
    "WorkerSettings",
    "load_settings",
]

LogLevel = Literal["crit", "error", "warn", "info", "debug"]
EventLoop = Literal["asyncio", "uvloop"]


class _Section(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")


class KafkaSettings(_Section):
    """Where the Kafka-protocol broker is, and how clients behave on it."""

    model_config = SettingsConfigDict(env_prefix="SHOPRANK_KAFKA_", frozen=True, extra="ignore")

    bootstrap: str | None = Field(
        default=None,
        description="SHOPRANK_KAFKA_BOOTSTRAP: host:port[,host:port]. Unset: start or reuse the embedded broker.",
    )
    embedded_host: str = Field(default="127.0.0.1", description="SHOPRANK_KAFKA_EMBEDDED_HOST (loopback).")
    embedded_port: int = Field(default=19092, ge=1, le=65535, description="SHOPRANK_KAFKA_EMBEDDED_PORT.")
    topic_prefix: str = Field(
        default="", pattern=r"^[A-Za-z0-9._-]*$", description="SHOPRANK_KAFKA_TOPIC_PREFIX: isolates deployments."
    )
    # The embedded broker makes every group join wait the full rebalance timeout, so it is short
    # by default; raise it on a real Kafka cluster with slow consumers.
    rebalance_timeout_s: float = Field(default=6.0, gt=0, description="SHOPRANK_KAFKA_REBALANCE_TIMEOUT_S.")
    session_timeout_s: float = Field(default=10.0, gt=0, description="SHOPRANK_KAFKA_SESSION_TIMEOUT_S.")
    heartbeat_interval_s: float = Field(default=1.0, gt=0, description="SHOPRANK_KAFKA_HEARTBEAT_INTERVAL_S.")
    # The embedded broker answers a fetch only when its wait runs out, even if data arrived, so the
    # wait bounds stream latency there; real Kafka answers at once, and 500 spares its request rate.
    # Search requests are not read by this consumer (see search_fetch_max_wait_ms): 100 ms keeps clicks
    # and catalogue changes well within their second, at a fifth of the fetches 20 ms cost.
    fetch_max_wait_ms: int = Field(
        default=100, ge=1, le=30_000,
        description="SHOPRANK_KAFKA_FETCH_MAX_WAIT_MS: long-poll wait of the worker's stream consumer (Faust).",
    )
    # Search requests have a consumer of their own (streams.search), so their wait is theirs: the
    # bare aiokafka round trip that bench_search measures as its floor waits 5 ms.
    search_fetch_max_wait_ms: int = Field(
        default=5, ge=1, le=30_000,
        description="SHOPRANK_KAFKA_SEARCH_FETCH_MAX_WAIT_MS: long-poll wait of the search request consumer.",
    )
    # Fetching four empty partitions every 5 ms cost an idle worker 0.09 of a core, and the embedded broker
    # as much again: CPU the catalogue's embedding and the learning loop lacked. Once no request has come
    # for a second the wait grows to this; the first request then waits at most about half of it on the
    # embedded broker (answers came after 7 ms at the median, 27 at most, with 50), none on real Kafka.
    search_idle_fetch_max_wait_ms: int = Field(
        default=50, ge=1, le=30_000,
        description="SHOPRANK_KAFKA_SEARCH_IDLE_FETCH_MAX_WAIT_MS: the search request consumer's wait once no "
        "request has come for a second (back to SHOPRANK_KAFKA_SEARCH_FETCH_MAX_WAIT_MS with the next).",
    )
    # A broker that lost its log lost our topics too; the worker creates them again from their specs.
    topic_check_s: float = Field(
        default=5.0, gt=0, le=3_600,
        description="SHOPRANK_KAFKA_TOPIC_CHECK_S: how often the worker checks that its topics exist on the "
        "broker, and creates the missing ones again (a broker that lost its log).",
    )
    # The search request consumer joins its group by subscribing to the topic, and aiokafka notices a
    # topic created (or grown) after the join only when it next refreshes its metadata: every 5 minutes
    # by default. After the embedded broker lost its log the worker creates the topic again, and the
    # consumer held no partition, answered nothing and kept /readyz at 503 until then (CI, 2026-12-06).
    search_metadata_max_age_s: float = Field(
        default=5.0, gt=0, le=3_600,
        description="SHOPRANK_KAFKA_SEARCH_METADATA_MAX_AGE_S: how often the search request consumer refreshes "
        "the broker's metadata, so that its topic created again or given more partitions is read.",
    )
    # Changelogs, interactions and logs are written a few records at a time; waiting a little packs
    # them into fewer produce requests (bench_learning, two workers: 1.12-1.35x one worker at 0 ms,
    # 1.62-1.82x at 5 ms). Search replies go out through their own producer without waiting.
    producer_linger_ms: int = Field(
        default=5, ge=0, le=1_000,
        description="SHOPRANK_KAFKA_PRODUCER_LINGER_MS: how long the worker's producer waits to fill a batch "
        "(search replies are sent at once, whatever this is).",
    )

    event_retention_hours: float = Field(
        default=720.0, gt=0,
        description="SHOPRANK_KAFKA_EVENT_RETENTION_HOURS: retention of the event topics shoprank creates (30 days).",
    )

    @property
    def retention_ms(self) -> int:
        return int(self.event_retention_hours * 3_600_000)

    @property
    def embedded_bootstrap(self) -> str:
        return f"{self.embedded_host}:{self.embedded_port}"


class WorkerSettings(_Section):
    """The Faust worker: identity, web server and table store."""

    model_config = SettingsConfigDict(env_prefix="SHOPRANK_WORKER_", frozen=True, extra="ignore")

    app_id: str = Field(
        default="shoprank", pattern=r"^[A-Za-z0-9._-]+$", description="SHOPRANK_WORKER_APP_ID: consumer group id."
    )
    web_host: str = Field(default="127.0.0.1", description="SHOPRANK_WORKER_WEB_HOST: bind address of the HTTP server.")
    web_port: int = Field(default=6066, ge=1, le=65535, description="SHOPRANK_WORKER_WEB_PORT.")
    # rocksdb:// keeps the tables (aggregates, dedupe ids, sessions, catalogue versions) on local disk
    # under data_dir (streams.table_store): a restart reads only the changelog's tail (bench_faults: 7 s,
    # flat), and a broker that lost its log does not take them along. memory:// rebuilds them from the
    # changelogs at every start (bench_faults: 12 s growing to 75 s) and needs no disk.
    store: str = Field(
        default="rocksdb://", pattern=r"^(rocksdb|memory)://",
        description="SHOPRANK_WORKER_STORE: Faust table store, rocksdb:// (on disk) or memory://.",
    )
    data_dir: Path = Field(default=Path(".shoprank"), description="SHOPRANK_WORKER_DATA_DIR: local state.")
    loglevel: LogLevel = Field(default="warn", description="SHOPRANK_WORKER_LOGLEVEL.")
    metrics_interval_s: float = Field(
        default=10.0, gt=0,
        description="SHOPRANK_WORKER_METRICS_INTERVAL_S: how often lag and index sizes are sampled for /metrics.",
    )
    # glibc gives each new thread its own malloc arena, up to 8 per core. The worker's threads (ONNX
    # runs, the store, Faust's consumer, RocksDB) each kept freed memory in theirs: bench_search at
    # 50,000 products, worker RSS 1,462 MB (peak 1,582) with glibc's default, 1,264 (peak 1,383) with 2.
    malloc_arenas: int = Field(
        default=2, ge=0,
        description="SHOPRANK_WORKER_MALLOC_ARENAS: most glibc malloc arenas in the worker (0: glibc's default, 8 per core).",
    )
    # A standby copy of a table partition is kept up to date from its changelog by another worker: a
    # partition that moves is then ready at once, and searches on every worker read the engagement
    # counters of partitions they hold as standbys. It costs that worker the replay: bench_learning's
    # traffic through two workers on one 2-core machine, 2,636 messages/s with one standby, 3,571 with none.
    # The learned models reach every worker through the rankers topic (streams.ranker_share), but the
    # engagement counters only through these copies: with more than two workers, workers - 1 standbys
    # give every worker every tenant's counters; fewer leave some searches ranked without engagement.
    standby_replicas: int = Field(
        default=1, ge=0,
        description="SHOPRANK_WORKER_STANDBY_REPLICAS: standby copies of each table partition on other workers.",
    )
    # libuv's loop (uvloop) runs the learning loop's agents faster, but searches answered no faster
    # and HTTP searches slower (2026-12-07/08, paired runs on one 2-core VM). bench_learning, one
    # worker: 1,888/2,185/2,502 messages/s on asyncio, 2,354/2,527/2,772 on uvloop. bench_search at
    # 100 searches/s, 10,000 products: POST /v1/search p50 11.0/10.4/9.2 ms on asyncio, 19.6/21.6/31.2
    # on uvloop; over Kafka p99 131-347 ms on asyncio, 74-631 on uvloop. Searches are what shoppers wait
    # for, so asyncio is the default; a worker that mostly takes in events may choose uvloop.
    event_loop: EventLoop = Field(
        default="asyncio",
        description="SHOPRANK_WORKER_EVENT_LOOP: the worker's event loop, asyncio or uvloop.",
    )
    # Long-lived objects are frozen as they settle, so that full garbage collections walk only young
    # ones (streams.gc_freeze): bench_search at 10,000 products, 22-40 ms pauses every 3.5 s without.
    gc_freeze_s: float = Field(
        default=2.0, ge=0,
        description="SHOPRANK_WORKER_GC_FREEZE_S: how often surviving objects are frozen out of full garbage "
                    "collections (0: never, Python's own collections only).",
    )
    gc_reclaim_s: float = Field(
        default=600.0, ge=0,
        description="SHOPRANK_WORKER_GC_RECLAIM_S: how often a full collection takes in the frozen objects too, "
                    "freeing garbage cycles among them (0: never).",
    )


class PixelSettings(_Section):
    """Validation of pixel events."""

    model_config = SettingsConfigDict(env_prefix="SHOPRANK_PIXEL_", frozen=True, extra="ignore")

    max_payload_bytes: int = Field(default=64 * 1024, gt=0, description="SHOPRANK_PIXEL_MAX_PAYLOAD_BYTES.")
    max_future_skew_s: float = Field(
        default=300.0, ge=0, description="SHOPRANK_PIXEL_MAX_FUTURE_SKEW_S: how far ahead a client clock may run."
    )
    dedupe_window_s: float = Field(
        default=86_400.0, gt=0, description="SHOPRANK_PIXEL_DEDUPE_WINDOW_S: how long event ids are remembered."
    )


class SecuritySettings(_Section):
    """Keys, origins and limits at the HTTP edge (streams.keys, streams.collector)."""

    model_config = SettingsConfigDict(env_prefix="SHOPRANK_SECURITY_", frozen=True, extra="ignore")

    keys_file: Path | None = Field(
        default=None,
        description="SHOPRANK_SECURITY_KEYS_FILE: hashed API keys (`shoprank keys`). Unset: DATA_DIR/keys.json.",
    )
    max_request_bytes: int = Field(
        default=64 * 1024, gt=0, description="SHOPRANK_SECURITY_MAX_REQUEST_BYTES: largest POST /v1/events body."
    )
    max_events_per_request: int = Field(
        default=100, ge=1, description="SHOPRANK_SECURITY_MAX_EVENTS_PER_REQUEST."
    )
    # Per write key and worker. A public key is shared by every visitor of a shop, so this bounds a
    # shop's whole traffic to one worker: size it to the shop, not to one browser.
    rate_per_key_per_s: float = Field(
        default=200.0, gt=0, description="SHOPRANK_SECURITY_RATE_PER_KEY_PER_S: collector requests per second."
    )
    rate_burst: float = Field(default=400.0, ge=1, description="SHOPRANK_SECURITY_RATE_BURST.")
    require_read_key: bool = Field(
        default=False,
        description="SHOPRANK_SECURITY_REQUIRE_READ_KEY: analytics need a tenant's secret read key (on in docker/).",
    )


class AttributionSettings(_Section):
    """Per-search attribution of clicks, add-to-carts and purchases (streams.attribution)."""

    model_config = SettingsConfigDict(env_prefix="SHOPRANK_ATTRIBUTION_", frozen=True, extra="ignore")

    window_s: float = Field(
        default=1800.0, gt=0, description="SHOPRANK_ATTRIBUTION_WINDOW_S: how long after a search an outcome counts."
    )
    late_grace_s: float = Field(
        default=30.0, ge=0,
        description="SHOPRANK_ATTRIBUTION_LATE_GRACE_S: how long an event waits for the log of the search it names.",
    )
    max_searches: int = Field(
        default=20, ge=1, description="SHOPRANK_ATTRIBUTION_MAX_SEARCHES: searches remembered per session."
    )
    sweep_interval_s: float = Field(
        default=5.0, gt=0, description="SHOPRANK_ATTRIBUTION_SWEEP_INTERVAL_S: how often waiting events are settled."
    )
    user_hash_key: str = Field(
        default="shoprank-change-me",
        description="SHOPRANK_ATTRIBUTION_USER_HASH_KEY: secret for hashing user ids; set your own in production.",
    )


class RankerSettings(_Section):
    """The online ranker (models.ranker): objective, exploration, control bucket, checkpoints."""

    model_config = SettingsConfigDict(env_prefix="SHOPRANK_RANKER_", frozen=True, extra="ignore")

    enabled: bool = Field(default=True, description="SHOPRANK_RANKER_ENABLED: re-rank by predicted business value.")
    objective: str = Field(
        default="conversion=1",
        description="SHOPRANK_RANKER_OBJECTIVE: weights over conversion, revenue and margin, e.g. conversion=1,revenue=0.01.",
    )
    objectives: str = Field(
        default="",
        description="SHOPRANK_RANKER_OBJECTIVES: per-tenant overrides, e.g. acme:revenue=1;demo:margin=1.",
    )
    control_share: float = Field(
        default=0.1, ge=0, le=1,
        description="SHOPRANK_RANKER_CONTROL_SHARE: sessions kept on the static hybrid order, for comparison.",
    )
    explore_slots: str = Field(default="3,7", description="SHOPRANK_RANKER_EXPLORE_SLOTS: 0-based page slots explored.")
    warmup: int = Field(default=200, ge=0, description="SHOPRANK_RANKER_WARMUP: interactions before re-ranking starts.")
    half_life_days: float = Field(default=7.0, gt=0, description="SHOPRANK_RANKER_HALF_LIFE_DAYS: engagement decay.")
    checkpoint_interval_s: float = Field(
        default=10.0, gt=0, description="SHOPRANK_RANKER_CHECKPOINT_INTERVAL_S: how often models are saved."
    )
    # A snapshot is about 3.6 KB. Real Kafka compacts the topic to one per tenant; the embedded broker keeps
    # every record in memory, so a shorter interval grows it faster (10 s: about 31 MB a day per tenant).
    share_interval_s: float = Field(
        default=10.0, gt=0,
        description="SHOPRANK_RANKER_SHARE_INTERVAL_S: how often the worker that learns a tenant's model publishes it "
                    "to the other workers (the rankers topic): how far behind their copies can be.",
    )

    @field_validator("objective")
    @classmethod
    def _objective_parses(cls, value: str) -> str:
        from models.ranker import Objective

        Objective.parse(value)
        return value

    def objective_for(self, tenant: str) -> str:
        for part in filter(None, (p.strip() for p in self.objectives.split(";"))):
            name, _, weights = part.partition(":")
            if name.strip() == tenant:
                return weights
        return self.objective

    def slots(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.explore_slots.split(",") if s.strip())


class ModelSettings(_Section):
    """Where exported models live."""

    model_config = SettingsConfigDict(env_prefix="SHOPRANK_MODELS_", frozen=True, extra="ignore")

    dir: Path = Field(default=Path(".shoprank/models"), description="SHOPRANK_MODELS_DIR: exported models.")
    embedder: str = Field(
        default="base-int8",
        description="SHOPRANK_MODELS_EMBEDDER: sub-directory of the serving embedder. The default holds the bundled "
                    "model quantised to int8 (as relevant as fp32 on homedepot-dev, twice as fast); `base` holds it "
                    "in fp32. Catalogues indexed by another base model are re-embedded in the background.",
    )
    dimensions: int = Field(
        default=0, ge=0,
        description="SHOPRANK_MODELS_DIMENSIONS: serve the first N dimensions (Matryoshka); 0 = all. Re-index after.",
    )
    threads: int = Field(
        default=0, ge=0,
        description="SHOPRANK_MODELS_THREADS: catalogue embedding runs side by side, one ONNX Runtime thread "
                    "each; 0 = one per core.",
    )
    batch_size: int = Field(
        default=4, ge=1, le=1024,
        description="SHOPRANK_MODELS_BATCH_SIZE: texts per ONNX Runtime run (sorted by length first); small runs "
                    "embedded fastest on two-core x86 (models.embedder.DEFAULT_BATCH_SIZE).",
    )
    query_threads: int = Field(
        default=1, ge=0,
        description="SHOPRANK_MODELS_QUERY_THREADS: ONNX Runtime threads for search queries (other than 1: a "
                    "session of their own); 0 = one per core.",
    )
    swap_check_s: float = Field(
        default=5.0, gt=0,
        description="SHOPRANK_MODELS_SWAP_CHECK_S: how often workers look for a tenant's newly promoted model.",
    )
    swap_core_share: float = Field(
        default=0.5, gt=0, le=1,
        description="SHOPRANK_MODELS_SWAP_CORE_SHARE: share of one core a hot swap's re-embedding may take.",
    )

    @property
    def embedder_dir(self) -> Path:
        return self.dir / self.embedder


class RetrainSettings(_Section):
    """Periodic fine-tuning per tenant (``shoprank models retrain``): triggers and budget."""

    model_config = SettingsConfigDict(env_prefix="SHOPRANK_RETRAIN_", frozen=True, extra="ignore")

    every_hours: float = Field(
        default=24.0, gt=0, description="SHOPRANK_RETRAIN_EVERY_HOURS: retrain at least this often, given new data.",
    )
    min_new: int = Field(
        default=5_000, ge=1,
        description="SHOPRANK_RETRAIN_MIN_NEW: new positives (clicks, carts, purchases) that trigger a run at once.",
    )
    min_new_on_schedule: int = Field(
        default=200, ge=0,
        description="SHOPRANK_RETRAIN_MIN_NEW_ON_SCHEDULE: new positives a scheduled run needs (else it waits).",
    )
    min_total: int = Field(
        default=1_000, ge=1, description="SHOPRANK_RETRAIN_MIN_TOTAL: positives a tenant needs before its first run.",
    )
    min_interval_minutes: float = Field(
        default=60.0, ge=0, description="SHOPRANK_RETRAIN_MIN_INTERVAL_MINUTES: never two runs closer than this.",
    )
    check_s: float = Field(default=60.0, gt=0, description="SHOPRANK_RETRAIN_CHECK_S: how often triggers are checked.")
    max_minutes: float = Field(
        default=30.0, gt=0, description="SHOPRANK_RETRAIN_MAX_MINUTES: time budget of one training run.",
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="SHOPRANK_RETRAIN_MAX_STEPS: step budget of one run (unset: epochs decide).",
    )
    epochs: int = Field(default=1, ge=1, description="SHOPRANK_RETRAIN_EPOCHS.")
    min_gain: float = Field(
        default=0.01,
        description="SHOPRANK_RETRAIN_MIN_GAIN: relative NDCG@10 gain over serving needed on every held-out split.",
    )
    half_life_days: float = Field(
        default=30.0, gt=0, description="SHOPRANK_RETRAIN_HALF_LIFE_DAYS: older outcomes weigh less in training.",
    )


class StoreSettings(_Section):
    """The vector store: Qdrant Edge in-process (default) or a Qdrant server."""

    model_config = SettingsConfigDict(env_prefix="SHOPRANK_STORE_", frozen=True, extra="ignore")

    kind: Literal["edge", "qdrant"] = Field(default="edge", description="SHOPRANK_STORE_KIND: edge or qdrant.")
    dir: Path = Field(default=Path(".shoprank/index"), description="SHOPRANK_STORE_DIR: Qdrant Edge shards.")
    url: str | None = Field(default=None, description="SHOPRANK_STORE_URL: Qdrant server URL (kind=qdrant).")
    collection_prefix: str = Field(default="", description="SHOPRANK_STORE_COLLECTION_PREFIX (kind=qdrant).")
    quantization: Literal["none", "binary"] = Field(
        default="none",
        description="SHOPRANK_STORE_QUANTIZATION: binary keeps 1 bit per dimension in RAM, rescoring with floats "
        "from disk; applies to collections created afterwards.",
    )
    fusion: Literal["relative", "rrf"] = Field(
        default="relative",
        description="SHOPRANK_STORE_FUSION: how hybrid search merges its dense and BM25 stages: relative (each "
        "stage's scores min-max normalised, then weighted) or rrf (reciprocal rank fusion, ranks only). On "
        "homedepot-dev RRF ranked below keyword search alone; relative above both stages.",
    )
    dense_weight: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="SHOPRANK_STORE_DENSE_WEIGHT (fusion=relative): the dense stage's share of the fused score, "
        "BM25 has the rest. `shoprank eval` on a shop's own labelled queries shows which share suits it.",
    )
    optimize_idle_s: float = Field(
        default=3.0, ge=0,
        description="SHOPRANK_STORE_OPTIMIZE_IDLE_S (edge): build the vector index of new products once no "
        "catalogue update has come for this long; 0 never does while running (only when the worker starts). "
        "Building pauses the worker (about 2 s per 10,000 new products); until then dense search scans them.",
    )
    optimize_min_points: int = Field(
        default=1000, ge=1,
        description="SHOPRANK_STORE_OPTIMIZE_MIN_POINTS (edge): new vectors in a collection before it is worth it.",
    )


class Settings(_Section):
    """Root settings. ``Settings()`` reads the environment; tests build one with explicit values."""

    model_config = SettingsConfigDict(env_prefix="SHOPRANK_", frozen=True, extra="ignore")

    tenants: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("demo",), description="SHOPRANK_TENANTS: comma-separated tenant ids this deployment serves."
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    pixel: PixelSettings = Field(default_factory=PixelSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    attribution: AttributionSettings = Field(default_factory=AttributionSettings)
    ranker: RankerSettings = Field(default_factory=RankerSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)

    @field_validator("tenants", mode="before")
    @classmethod
    def _split_tenants(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @property
    def keys_file(self) -> Path:
        return self.security.keys_file or self.worker.data_dir / "keys.json"

    @property
    def faust_dir(self) -> Path:
        """Faust's data directory (its tables on disk), one per deployment: topic prefix and app id."""
        return self.worker.data_dir / f"{self.kafka.topic_prefix}{self.worker.app_id}"

    def topic(self, name: str) -> str:
        """Broker-side name of a logical topic (``pixel`` → ``shoprank.pixel``, with the prefix)."""
        from schemas.topics import topic_spec

        return topic_spec(name).full_name(self.kafka.topic_prefix)


def load_settings(**overrides: Any) -> Settings:
    """Read the environment, then apply ``section.field=value`` overrides from CLI flags.

    ``load_settings(kafka={"bootstrap": "h:9092"})`` overrides one field and keeps the rest.
    """
    base = Settings()
    if not overrides:
        return base
    data = base.model_dump()
    for key, value in overrides.items():
        if isinstance(value, dict):
            data[key].update({k: v for k, v in value.items() if v is not None})
        elif value is not None:
            data[key] = value
    return Settings.model_validate(data)
