"""Offline relevance evaluation: NDCG@10, MRR@10 and Recall@100 of keyword, dense and hybrid search.

Hybrid search runs twice: with the configured fusion (``hybrid``) and with reciprocal rank fusion
(``hybrid-rrf``), the usual reference, so that a shop sees on its own queries what its fusion buys;
``dense_weights`` adds a row per relative-fusion weight to try (``hybrid-w0.3``...), to choose
``SHOPRANK_STORE_DENSE_WEIGHT`` from.

Data format (as in ``../shared/data/``): ``products.jsonl`` (``product_id``, ``title``, optional more
catalogue fields), ``queries.tsv`` (``query_id<TAB>query``), ``qrels.txt`` (TREC: ``qid 0 pid grade``).
Two views: *retrieval* over the whole catalogue, and *re-ranking* of each query's judged products.
Metrics come from ir-measures (pytrec_eval underneath), not hand-written code.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from models.embedder import Embedder
from models.indexer import CatalogueIndexer
from models.store import DEFAULT_FUSION, Fusion, SearchFilter, SearchMode, VectorStore
from schemas import CatalogueUpdate

__all__ = ["LabelledSet", "load_labelled_set", "evaluate", "EvalReport", "MODES", "METRICS"]

#: The rows of a report: label -> (search mode, fusion; None: the fusion ``evaluate`` is given).
_COMPARED: dict[str, tuple[SearchMode, Fusion | None]] = {
    "keyword": ("keyword", None), "dense": ("dense", None), "hybrid": ("hybrid", None),
    "hybrid-rrf": ("hybrid", Fusion("rrf")),
}
MODES: tuple[str, ...] = tuple(_COMPARED)
METRICS = ("nDCG@10", "RR@10", "R@100")


@dataclass
class LabelledSet:
    name: str
    products: list[CatalogueUpdate]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id -> product id -> grade


def load_labelled_set(directory: Path, *, tenant: str = "eval", max_queries: int | None = None,
                      seed: int = 0) -> LabelledSet:
    """Read a labelled set; ``max_queries`` samples judged queries (seeded) to bound the run time."""
    products = []
    with (directory / "products.jsonl").open("rb") as f:
        for raw in f:
            if raw.strip():
                obj = orjson.loads(raw)
                products.append(CatalogueUpdate(tenant=tenant, updated_at=1, **{
                    k: v for k, v in obj.items() if k in CatalogueUpdate.model_fields and k not in ("tenant",)
                }))
    queries = {}
    for line in (directory / "queries.tsv").read_text().splitlines():
        if line.strip():
            qid, _, text = line.partition("\t")
            queries[qid] = text
    qrels: dict[str, dict[str, int]] = {}
    for line in (directory / "qrels.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
    judged = sorted(q for q in queries if q in qrels)
    if max_queries is not None and max_queries < len(judged):
        judged = sorted(random.Random(seed).sample(judged, max_queries))
    return LabelledSet(directory.name, products, {q: queries[q] for q in judged}, {q: qrels[q] for q in judged})


@dataclass
class EvalReport:
    dataset: str
    queries: int
    products: int
    #: what ``hybrid`` fused with (:meth:`Fusion.describe`)
    fusion: str = ""
    #: (view, mode) -> metric -> value
    results: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def markdown(self) -> str:
        head = f"Relevance on `{self.dataset}`: {self.queries} queries, {self.products} products"
        head += f"; hybrid: {self.fusion}, hybrid-rrf: RRF\n\n" if self.fusion else "\n\n"
        rows = ["| view | mode | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
        for (view, mode), m in self.results.items():
            rows.append(f"| {view} | {mode} | " + " | ".join(f"{m[k]:.4f}" for k in METRICS) + " |")
        return head + "\n".join(rows) + "\n"

    def modes(self) -> list[str]:
        """The report's rows per view, in order (:data:`MODES`, then any weights tried)."""
        return list(dict.fromkeys(mode for _, mode in self.results))

    def plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        views = sorted({v for v, _ in self.results})
        fig, axes = plt.subplots(1, len(views), figsize=(5 * len(views), 3.6), squeeze=False)
        for ax, view in zip(axes[0], views, strict=True):
            modes = self.modes()
            width = 0.8 / len(modes)
            for i, mode in enumerate(modes):
                vals = [self.results[(view, mode)][k] for k in METRICS]
                ax.bar(np.arange(len(METRICS)) + (i - (len(modes) - 1) / 2) * width, vals, width, label=mode)
            ax.set_xticks(np.arange(len(METRICS)), METRICS)
            ax.set_title(f"{view} — {self.dataset}")
            ax.set_ylim(0, 1)
            ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def evaluate(data: LabelledSet, store: VectorStore, embedder: Embedder, *, tenant: str = "eval",
             index: bool = True, progress: Callable[[str, int, int], None] | None = None,
             fusion: Fusion = DEFAULT_FUSION, dense_weights: Sequence[float] = ()) -> EvalReport:
    """Index ``data`` (unless already indexed) and score each mode in both views; ``hybrid`` fuses with
    ``fusion``, and each of ``dense_weights`` adds a relative fusion with that weight."""
    import ir_measures

    compared = dict(_COMPARED)
    for weight in dense_weights:
        compared[f"hybrid-w{weight:g}"] = ("hybrid", Fusion("relative", weight))
    report = EvalReport(data.name, len(data.queries), len(data.products), fusion.describe())
    if index:
        t = time.perf_counter()
        _index(data.products, store, embedder, progress)
        report.seconds["index"] = time.perf_counter() - t
    qids = list(data.queries)
    t = time.perf_counter()
    qvecs = embedder.embed([data.queries[q] for q in qids])
    report.seconds["embed_queries"] = time.perf_counter() - t
    qrels = [ir_measures.Qrel(q, p, g) for q in qids for p, g in data.qrels[q].items()]
    measures = [ir_measures.parse_measure(m) for m in METRICS]
    for view in ("retrieval", "rerank"):
        for label, (mode, fused) in compared.items():
            t = time.perf_counter()
            run = []
            for i, q in enumerate(qids):
                if progress:
                    progress(f"{view}/{label}", i, len(qids))
                only = tuple(data.qrels[q]) if view == "rerank" else None
                hits = store.search(tenant, qvecs[i], data.queries[q], mode=mode, limit=100,
                                    filter=SearchFilter(product_ids=only) if only else None, fusion=fused or fusion)
                run += [ir_measures.ScoredDoc(q, h.product_id, float(h.score)) for h in hits]
            agg = ir_measures.calc_aggregate(measures, qrels, run)
            report.results[(view, label)] = {str(m): float(agg.get(m, 0.0)) for m in measures}
            report.seconds[f"{view}/{label}"] = time.perf_counter() - t
    return report


def _index(products: Sequence[CatalogueUpdate], store: VectorStore, embedder: Embedder,
           progress: Callable[[str, int, int], None] | None, batch: int = 512) -> None:
    indexer = CatalogueIndexer(store, embedder)
    for start in range(0, len(products), batch):
        if progress:
            progress("index", start, len(products))
        indexer.apply(products[start : start + batch])
    store.flush()
