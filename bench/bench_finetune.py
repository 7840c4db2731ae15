"""Per-shop fine-tuning on a labelled set: NDCG@10 of the fine-tuned model against the base, novel queries.

Runs what ``shoprank models train --labelled DIR --split query`` runs (models.training.pipeline):
20% of the judged queries are held out (never trained on), the bundled MiniLM is fine-tuned on the
rest for ``--max-minutes`` on the CPU, exported with the ONNX parity check, and the gate scores both
models on the held-out queries (retrieval over the products judged in that split). Both models are
then scored in the two modes of ``shoprank eval`` on the same novel queries: retrieval from a larger
haystack (the split's judged products plus ``--distractors`` random others) and re-ranking of
each query's own judged products. The baseline of each NDCG row is the base model in the same run. Goal: at least +10% on novel queries, training under
30 minutes on 2 cores.

Usage: python bench/bench_finetune.py [--data ../shared/data/homedepot-dev] [--max-minutes 4] [--no-record]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import Row, append_rows, code_version  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = "bench_finetune"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "homedepot-dev")
    ap.add_argument("--max-minutes", type=float, default=4.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--distractors", type=int, default=5000,
                    help="Random unjudged products added to the retrieval mode's haystack.")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    import random

    from models.embedder import OnnxEmbedder
    from models.evaluation import load_labelled_set
    from models.export import export_base_model
    from models.indexer import product_text
    from models.training.data import examples_from_labelled
    from models.training.gate import GateConfig, rerank_ndcg, retrieval_ndcg
    from models.training.pipeline import RunConfig, train_tenant
    from models.training.registry import version_dir
    from models.training.trainer import TrainConfig

    base_dir = REPO / ".shoprank" / "models" / "base"
    export_base_model(base_dir)
    data = load_labelled_set(args.data, tenant="bench")
    rows = examples_from_labelled(data)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_tenant(
            rows, models_dir=Path(tmp) / "models", tenant="bench", base_dir=base_dir, work_dir=Path(tmp) / "work",
            source=f"labelled:{args.data.name}",
            config=RunConfig(splits=("query",), mined_per_query=0, gate_config=GateConfig(min_relative_gain=0.0)),
            train_config=TrainConfig(batch_size=args.batch_size, max_minutes=args.max_minutes, seed=0),
            progress=False, log=print,
        )
        seconds = time.perf_counter() - t0
        held = result.splits.tests["query"]
        judged = {e.product_id for e in held}
        others = sorted(p.product_id for p in data.products if p.product_id not in judged)
        picked = set(random.Random(0).sample(others, min(args.distractors, len(others))))
        distractors = {p.product_id: product_text(p) for p in data.products if p.product_id in picked}
        modes = {}
        for name, model_dir in (("fine-tuned", version_dir(Path(tmp) / "models", "bench", result.manifest.version)),
                                ("base", base_dir)):
            emb = OnnxEmbedder(model_dir)
            modes[name] = {"retrieval": retrieval_ndcg(emb, held, distractors=distractors),
                           "rerank": rerank_ndcg(emb, held)}
            print(f"{name}: retrieval from {len(judged) + len(distractors)} products "
                  f"{modes[name]['retrieval']:.4f}, re-ranking judged {modes[name]['rerank']:.4f}")
    scores = result.manifest.metrics["query"]
    rep = result.report
    per10k = rep.seconds_per_10k_pairs / 60
    print(f"novel queries NDCG@10: fine-tuned {scores['candidate']:.4f} vs base {scores['serving']:.4f} "
          f"({scores['relative_gain']:+.1%}); {rep.pairs_seen} pairs in {rep.seconds / 60:.1f} min "
          f"({per10k:.1f} min per 10,000 pairs); whole run {seconds / 60:.1f} min; gate: {result.manifest.reason}")
    note = (f"{args.data.name}: {len(rows)} labelled rows, 20% of queries held out (novel-query split), retrieval "
            f"over the split's judged products; {rep.steps} steps x batch {args.batch_size}, {rep.pairs_seen} pairs, "
            f"budget {args.max_minutes:g} min on the CPU, weighted contrastive + Matryoshka loss from the bundled "
            f"MiniLM, ONNX parity {result.manifest.parity_max_abs_diff:.1e}; baseline = base model, same run; "
            f"code {code_version(REPO / 'models')}")
    haystack = len(judged) + len(distractors)
    rows_out = [
        Row("NDCG@10 novel queries, fine-tuned vs base model", scores["candidate"], scores["serving"], note),
        Row(f"NDCG@10 novel queries, retrieval from {haystack} products, fine-tuned vs base",
            modes["fine-tuned"]["retrieval"], modes["base"]["retrieval"], note),
        Row("NDCG@10 novel queries, re-ranking each query's judged products, fine-tuned vs base",
            modes["fine-tuned"]["rerank"], modes["base"]["rerank"], note),
        Row("training minutes per 10,000 pairs (2 cores)", per10k, None, note),
        Row("fine-tuning run minutes, data to gated model", seconds / 60, None, note),
    ]
    if not args.no_record:
        append_rows(BENCHMARK, rows_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
