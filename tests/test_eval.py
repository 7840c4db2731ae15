"""Relevance evaluation on the bundled mini labelled set, with the real model and the real store."""

from __future__ import annotations

from pathlib import Path

from models.embedder import OnnxEmbedder
from models.evaluation import METRICS, MODES, evaluate, load_labelled_set
from models.store import open_store
from tests.conftest import run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "eval-mini"


def test_all_modes_in_both_views_score_sensibly(model_dir: Path, tmp_path: Path) -> None:
    data = load_labelled_set(FIXTURE)
    assert len(data.queries) == 10 and len(data.products) == 40
    store = open_store("edge", root=tmp_path)
    try:
        report = evaluate(data, store, OnnxEmbedder(model_dir))
    finally:
        store.close()
    assert set(report.results) == {(v, m) for v in ("retrieval", "rerank") for m in MODES}
    for scores in report.results.values():
        assert set(scores) == set(METRICS)
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    # every query's best product is findable on this small, clean set
    assert report.results[("retrieval", "hybrid")]["nDCG@10"] > 0.7
    assert report.results[("retrieval", "dense")]["R@100"] == 1.0
    # re-ranking only the judged products can only help recall
    assert report.results[("rerank", "keyword")]["R@100"] >= report.results[("retrieval", "keyword")]["R@100"]
    assert "| retrieval | hybrid |" in report.markdown() and "| retrieval | hybrid-rrf |" in report.markdown()
    assert "hybrid: relative, dense weight 0.5, hybrid-rrf: RRF" in report.markdown()  # what was compared
    png = report.plot(tmp_path / "plot.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_eval_command_writes_table_and_plot(model_dir: Path, tmp_path: Path) -> None:
    env = {"SHOPRANK_MODELS_DIR": str(model_dir.parent), "SHOPRANK_MODELS_EMBEDDER": model_dir.name}
    result = run_cli("eval", "--data", str(FIXTURE), "--out", str(tmp_path), "--queries", "5",
                     "--dense-weight", "0", "--dense-weight", "1", env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| rerank | dense |" in result.stdout
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [float(c) for c in line.split("|")[3:6]]
            for line in result.stdout.splitlines() if line.startswith("| r")}
    # A weight of 1 is the dense stage's order. A weight of 0 is the keyword stage's order (each of its
    # matches ahead of every product without a query term), then the dense-only products: the same first
    # hit, and nothing lost against keyword search alone.
    assert rows[("retrieval", "hybrid-w1")] == rows[("retrieval", "dense")]
    w0, keyword = rows[("retrieval", "hybrid-w0")], rows[("retrieval", "keyword")]
    assert w0[1] == keyword[1] and w0[0] >= keyword[0] and w0[2] >= keyword[2]
    assert (tmp_path / "relevance-eval-mini.png").exists() and (tmp_path / "relevance-eval-mini.md").exists()
    bad = run_cli("eval", "--data", str(tmp_path), env=env)
    assert bad.returncode == 1 and "products.jsonl" in bad.stderr and "Traceback" not in bad.stderr
    weight = run_cli("eval", "--data", str(FIXTURE), "--dense-weight", "1.5", env=env)
    assert weight.returncode == 2 and "--dense-weight" in weight.stderr and "Traceback" not in weight.stderr
