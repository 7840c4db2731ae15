"""Indexing throughput through the catalogue agent, against raw ONNX batch throughput; int8 variant.

In one run, on the same generated products:
- baseline: ``OnnxEmbedder.embed`` on the products' texts, in one call (batched, length-sorted);
- indexing: a worker consuming the catalogue topic (micro-batches, embedding, BM25, Qdrant Edge
  upserts, version table), timed from its first indexed product to its last;
- int8: the dynamically quantised export (per channel) against fp32 — cosine agreement and speed.

Usage: python bench/bench_indexing.py [--products 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Row, append_rows, code_version  # noqa: E402

from models.embedder import OnnxEmbedder  # noqa: E402
from models.export import BASE_FP32_DIR, BASE_INT8_DIR, export_base_model  # noqa: E402
from models.indexer import product_text  # noqa: E402
from schemas import encode  # noqa: E402
from streams.broker import EmbeddedBroker  # noqa: E402
from streams.kafka import ensure_topics, producer  # noqa: E402
from streams.samples import generate_catalogue  # noqa: E402
from streams.supervise import WorkerProcess, free_port  # noqa: E402

MODELS = Path(".shoprank/models")
#: What the worker serves by default (streams.settings.ModelSettings.embedder): the int8 export.
SERVED = BASE_INT8_DIR


def _raw_onnx(texts: list[str], model: Path) -> float:
    embedder = OnnxEmbedder(model)
    embedder.embed(texts[:64])  # warm up
    t = time.perf_counter()
    embedder.embed(texts)
    return len(texts) / (time.perf_counter() - t)


def _through_worker(n: int, updates: list, tmp: Path) -> float:  # type: ignore[type-arg]
    broker = EmbeddedBroker(port=free_port()).start()
    try:
        prefix = f"benchidx{time.time_ns()}."
        asyncio.run(ensure_topics(broker.bootstrap, prefix))

        async def publish() -> None:
            async with producer(broker.bootstrap, linger_ms=5) as prod:
                for u in updates:
                    await prod.send(f"{prefix}shoprank.catalogue", encode(u), key=f"{u.tenant}:{u.product_id}".encode())

        worker = WorkerProcess(broker.bootstrap, topic_prefix=prefix, app_id="bench-index", tenants="demo",
                               data_dir=tmp / "data", log_path=tmp / "worker.log",
                               extra_env={"SHOPRANK_MODELS_DIR": str(MODELS), "SHOPRANK_MODELS_EMBEDDER": SERVED,
                                          "SHOPRANK_STORE_DIR": str(tmp / "index")})
        try:
            worker.start()
            asyncio.run(publish())
            # The rate is timed by the worker (when the batch that reached each count ended), so the
            # polling can be slow: polled every 50 ms, the stats requests took 6% of the time the
            # worker held the interpreter (py-spy --gil), time its embedding runs had to wait for.
            start = first = None
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                s = worker.get("/v1/stats/catalogue")
                done = s["embedded"]
                if start is None and done:
                    start, first = s["last_batch_at"], done
                if done >= n:
                    return (n - first) / (s["last_batch_at"] - start)  # type: ignore[operator]
                time.sleep(0.5)
            raise TimeoutError(f"indexed only {done} of {n}")
        finally:
            worker.stop()
    finally:
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=5000)
    args = ap.parse_args()
    n = args.products
    console = Console()
    fp32 = export_base_model(MODELS / BASE_FP32_DIR)
    int8 = export_base_model(MODELS / SERVED, quantize=True)
    updates = generate_catalogue(n, seed=3, tenant="demo")
    texts = [product_text(u) for u in updates]
    # Raw throughput before and after the worker phase: this machine drifts by 10-20% between
    # phases of a few minutes, so the baseline is their mean.
    raw_before = _raw_onnx(texts, MODELS / SERVED)
    with tempfile.TemporaryDirectory() as tmp:
        indexed = _through_worker(n, updates, Path(tmp))
    raw_after = _raw_onnx(texts, MODELS / SERVED)
    raw = (raw_before + raw_after) / 2
    sample = texts[: min(2000, n)]
    a = OnnxEmbedder(MODELS / BASE_FP32_DIR).embed(sample)
    b = OnnxEmbedder(MODELS / SERVED).embed(sample)
    cos = np.sum(a * b, axis=1)
    raw_sample = _raw_onnx(sample, MODELS / BASE_FP32_DIR)
    raw_int8 = _raw_onnx(sample, MODELS / SERVED)
    version = code_version(Path(__file__).resolve().parents[1])
    rows = [
        Row("indexing products/s through the catalogue agent", indexed, raw,
            f"{n} generated products, {int8.version} (the default embedder); baseline = raw ONNX batch embedding "
            f"of the same texts with the same model, mean of before "
            f"({raw_before:.1f}/s) and after ({raw_after:.1f}/s) the worker phase; "
            f"code {version}"),
        Row("int8 embedder texts/s", raw_int8, raw_sample,
            f"{len(sample)} product texts; baseline fp32; cosine to fp32 mean {cos.mean():.4f}, "
            f"min {cos.min():.4f}; {int8.version} vs {fp32.version}"),
    ]
    table = Table("metric", "value", "baseline", "ratio")
    for r in rows:
        table.add_row(r.metric, f"{r.value:,.1f}", f"{r.baseline:,.1f}", f"{r.ratio:.3f}")
    console.print(table)
    console.print(f"int8 cosine to fp32: mean {cos.mean():.4f}, min {cos.min():.4f}")
    append_rows("bench_indexing", rows)


if __name__ == "__main__":
    main()
