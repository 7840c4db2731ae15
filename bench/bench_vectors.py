"""Smaller vectors: NDCG@10, dense-vector memory and query latency per Matryoshka dimension and quantisation.

For each setting (served dimensions 384/256/128/64 × float32 or binary quantisation with float rescoring)
the same products are indexed in a fresh Qdrant Edge shard (optimised, so HNSW and the quantised copy
exist), and the labelled queries are answered in dense and hybrid retrieval. The baseline of every row is
the 384-d float32 setting of the same run. Products are embedded once at full size and truncated per
setting (then L2-normalised again), exactly as ``SHOPRANK_MODELS_DIMENSIONS`` serves them.

The base MiniLM was not trained with a Matryoshka loss, so its truncated vectors lose more than a
fine-tuned model's would: run with ``--model DIR`` on a model from ``shoprank models train``.

Usage: python bench/bench_vectors.py [--data ../shared/data/homedepot-dev] [--queries 500]
       [--products 8000] [--model DIR] [--no-record]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import Row, append_rows, code_version  # noqa: E402

from models.embedder import OnnxEmbedder, TruncatedEmbedder  # noqa: E402
from models.evaluation import LabelledSet, evaluate, load_labelled_set  # noqa: E402
from models.store import EdgeStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = "bench_vectors"
DIMS = (384, 256, 128, 64)
QUANT = ("none", "binary")


class CachedEmbedder:
    """Embeds each distinct text once: every setting reuses the full-size vectors."""

    def __init__(self, inner: OnnxEmbedder) -> None:
        self.inner = inner
        self.cache: dict[str, np.ndarray] = {}

    @property
    def version(self) -> str:
        return self.inner.version

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            for t, v in zip(todo, self.inner.embed(todo), strict=True):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts]) if texts else np.empty((0, self.dimensions), np.float32)


def subset(data: LabelledSet, products: int, seed: int = 0) -> LabelledSet:
    """Every judged product of the sampled queries, plus random others up to ``products``."""
    judged = {p for q in data.qrels.values() for p in q}
    keep = [p for p in data.products if p.product_id in judged]
    others = [p for p in data.products if p.product_id not in judged]
    rng = random.Random(seed)
    keep += rng.sample(others, max(0, min(len(others), products - len(keep))))
    return LabelledSet(data.name, keep, data.queries, data.qrels)


def latency_ms(store: EdgeStore, embedder: TruncatedEmbedder, queries: list[str]) -> tuple[float, float]:
    vectors = embedder.embed(queries)
    times = []
    for q, v in zip(queries, vectors, strict=True):
        t = time.perf_counter()
        store.search("eval", v, q, mode="dense", limit=100)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "homedepot-dev")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--products", type=int, default=8000)
    ap.add_argument("--model", type=Path, default=REPO / ".shoprank" / "models" / "base")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not (args.model / "manifest.json").exists():
        from models.export import export_base_model

        export_base_model(args.model)
    data = subset(load_labelled_set(args.data, max_queries=args.queries), args.products)
    base = CachedEmbedder(OnnxEmbedder(args.model))
    t = time.perf_counter()
    from models.indexer import product_text

    base.embed([product_text(p) for p in data.products] + list(data.queries.values()))
    embed_s = time.perf_counter() - t
    print(f"{len(data.products)} products, {len(data.queries)} queries embedded in {embed_s:.0f} s")
    results: dict[tuple[int, str], dict[str, float]] = {}
    for quant in QUANT:
        for dims in DIMS:
            emb = TruncatedEmbedder(base, dims)  # type: ignore[arg-type]
            with tempfile.TemporaryDirectory() as tmp:
                store = EdgeStore(Path(tmp), quantization=quant)  # type: ignore[arg-type]
                evaluate_index_only(data, store, emb)
                store.optimize("eval")
                report = evaluate(data, store, emb, index=False)
                p50, p99 = latency_ms(store, emb, list(data.queries.values()))
                store.close()
            n = len(data.products)
            ram = n * dims * 4 / 1e6 if quant == "none" else n * dims / 8 / 1e6
            results[(dims, quant)] = {
                "dense": report.results[("retrieval", "dense")]["nDCG@10"],
                "hybrid": report.results[("retrieval", "hybrid")]["nDCG@10"],
                "p50": p50, "p99": p99, "ram": ram,
            }
            r = results[(dims, quant)]
            print(f"{dims:>4} {quant:<6} nDCG@10 dense {r['dense']:.4f} hybrid {r['hybrid']:.4f}  "
                  f"dense p50 {p50:.2f} ms p99 {p99:.2f} ms  vectors in RAM {ram:.1f} MB")
    ref = results[(384, "none")]
    rev = code_version(REPO / "models")
    note = (f"{args.data.name}: {len(data.queries)} queries, {len(data.products)} products (judged + random), "
            f"retrieval over all of them; model {base.version}; Qdrant Edge optimised; binary = 1 bit/dim in RAM, "
            f"float vectors on disk, rescoring 3x candidates; baseline = 384-d float32 in the same run; code {rev}")
    rows = []
    for (dims, quant), r in results.items():
        label = f"{dims}-d {'binary+rescore' if quant == 'binary' else 'float32'}"
        rows += [
            Row(f"nDCG@10 dense retrieval, {label}", r["dense"], ref["dense"], note),
            Row(f"nDCG@10 hybrid retrieval, {label}", r["hybrid"], ref["hybrid"], note),
            Row(f"dense query p99 ms, {label}", r["p99"], ref["p99"], note + f"; p50 {r['p50']:.2f} ms"),
            Row(f"dense vectors held in RAM MB (computed: n*d*4 bytes, or n*d/8 binary), {label}", r["ram"],
                ref["ram"], note),
        ]
    if not args.no_record:
        append_rows(BENCHMARK, rows)
    return 0


def evaluate_index_only(data: LabelledSet, store: EdgeStore, emb: TruncatedEmbedder) -> None:
    from models.indexer import CatalogueIndexer

    indexer = CatalogueIndexer(store, emb)
    for start in range(0, len(data.products), 1024):
        indexer.apply(data.products[start : start + 1024])
    store.flush()


if __name__ == "__main__":
    sys.exit(main())
