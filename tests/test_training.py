"""Per-tenant fine-tuning: training rows and splits, the weighted loss, a real tiny training run on the
mini labelled set, ONNX parity of the fine-tuned model, the promotion gate, promote and rollback."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from models.embedder import OnnxEmbedder
from models.evaluation import load_labelled_set
from models.exceptions import ModelError
from models.export import TorchReference
from models.ranker.online import Objective
from models.serving import read_pointer
from models.training.data import (
    Example,
    OutcomeWeights,
    examples_from_interactions,
    examples_from_labelled,
    make_splits,
    normalise_query,
)
from models.training.gate import GateConfig, decide, run_gate
from models.training.pairs import Pair, build_pairs
from models.training.registry import (
    PARITY_TOLERANCE,
    list_versions,
    promote,
    read_version,
    register,
    rollback,
    serving_version,
)
from models.training.trainer import TrainConfig, pairs_loss, train
from schemas.interactions import AttributedInteraction, LoggedItem
from tests.conftest import run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "eval-mini"
DAY = 86_400_000
SEED = 7
TEXTS = ["cordless drill", "white paint", "Ceiling fan 52 inch with light kit", "", "a" * 400, "écrou M8"]


# ------------------------------------------------------------------------------------------ rows


def _event(i: int, outcome: str, *, query: str = "drill", product: str = "p1", position: int = 0,
           ts: int = 100 * DAY, value: float = 0.0, margin: float = 0.0, search: str = "s1",
           items: list[str] | None = None) -> AttributedInteraction:
    if outcome == "impression":
        return AttributedInteraction(interaction_id=f"i{i}", tenant="demo", search_id=search, query=query,
                                     outcome="impression", event_ts=ts, search_ts=ts,
                                     items=[LoggedItem(product_id=p, position=k) for k, p in enumerate(items or [])])
    return AttributedInteraction(interaction_id=f"i{i}", tenant="demo", search_id=search, query=query,
                                 product_id=product, position=position, outcome=outcome,  # type: ignore[arg-type]
                                 value=value, margin=margin, event_ts=ts, search_ts=ts)


CATALOGUE = {f"p{i}": f"product {i}" for i in range(10)}


def test_labelled_rows_weigh_by_grade_and_keep_grade_zero_as_negatives() -> None:
    rows = examples_from_labelled(load_labelled_set(FIXTURE))
    assert len(rows) == 33  # every judgement of the fixture
    by = {(r.query, r.product_id): r for r in rows}
    assert by[("cordless drill", "1")].weight == 2.0 and by[("cordless drill", "1")].grade == 2
    assert by[("cordless drill", "4")].weight == 1.0 and by[("cordless drill", "4")].positive
    assert not by[("cordless drill", "5")].positive  # grade 0: a judged negative
    assert by[("cordless drill", "1")].text.startswith("Cordless drill driver")


def test_interaction_weights_follow_the_objective_and_decay_with_age() -> None:
    now = 100 * DAY
    rows = [_event(1, "click", product="p1"), _event(2, "add_to_cart", product="p2"),
            _event(3, "purchase", product="p3", value=50.0, margin=20.0),
            _event(4, "purchase", product="p4", value=500.0, margin=-100.0),
            _event(5, "click", product="p5", ts=now - 30 * DAY)]
    revenue = OutcomeWeights(objective=Objective(conversion=1, revenue=0.02, margin=0), half_life_days=30)
    w = {r.product_id: r.weight for r in examples_from_interactions(rows, CATALOGUE, weights=revenue, now=now)}
    assert w["p3"] > w["p2"] > w["p1"] > 0
    assert w["p3"] == pytest.approx(4.0 * (1 + 0.02 * 50))
    assert w["p5"] == pytest.approx(w["p1"] / 2)  # one half-life old
    margin = OutcomeWeights(objective=Objective(conversion=1, revenue=0, margin=0.1))
    wm = {r.product_id: r.weight for r in examples_from_interactions(rows, CATALOGUE, weights=margin, now=now)}
    assert wm["p3"] == pytest.approx(4.0 * (1 + 0.1 * 20))
    assert wm["p4"] == pytest.approx(4.0)  # a loss-making sale is still worth a plain purchase
    assert wm["p4"] > wm["p2"]
    conversion = {r.product_id: r.weight for r in examples_from_interactions(rows, CATALOGUE, now=now)}
    assert conversion["p3"] == conversion["p4"]  # conversion only: value does not matter


def test_shown_above_a_click_and_skipped_are_weak_negatives_below_it_nothing() -> None:
    rows = [_event(1, "impression", items=["p0", "p1", "p2", "p3", "p4"]),
            _event(2, "click", product="p2", position=2),
            _event(3, "impression", search="s2", query="saw", items=["p5", "p6"]),  # nothing engaged: no evidence
            _event(4, "click", product="nope", position=0, search="s3")]  # not in the catalogue: dropped
    out = examples_from_interactions(rows, CATALOGUE)
    negatives = sorted(r.product_id for r in out if not r.positive)
    assert negatives == ["p0", "p1"]
    assert all(r.weight == pytest.approx(OutcomeWeights().skipped) for r in out if not r.positive)
    assert [r.product_id for r in out if r.positive] == ["p2"]


def _dated_rows(n: int = 400) -> list[Example]:
    rng = np.random.default_rng(SEED)
    return [Example(f"Query {rng.integers(40)}", f"p{rng.integers(60)}", "t", 1.0, int(rng.integers(0, 3)),
                    int(rng.integers(1, 100)) * DAY) for _ in range(n)]


def test_splits_hold_out_queries_products_and_time_without_leaking() -> None:
    rows = _dated_rows()
    s = make_splits(rows, test_fraction=0.2, seed=SEED)
    assert set(s.tests) == {"time", "query", "product"}
    train_queries = {normalise_query(e.query) for e in s.train}
    train_products = {e.product_id for e in s.train}
    assert not train_queries & {normalise_query(e.query) for e in s.tests["query"]}
    assert not train_products & {e.product_id for e in s.tests["product"]}
    cutoff = s.held_out["cutoff_ts"]
    assert isinstance(cutoff, int)
    assert max(e.ts for e in s.train) <= cutoff < min(e.ts for e in s.tests["time"])
    assert sum(len(v) for v in s.tests.values()) + len(s.train) == len(rows)  # every row lands once
    again = make_splits(rows, test_fraction=0.2, seed=SEED)
    assert again.train == s.train and again.tests == s.tests
    assert make_splits(rows, test_fraction=0.2, seed=SEED + 1).tests["query"] != s.tests["query"]
    undated = make_splits([Example(e.query, e.product_id, e.text, e.weight, e.grade) for e in rows], seed=SEED)
    assert "time" not in undated.tests  # a labelled set has no time to split on


def test_pairs_never_use_an_answer_as_a_negative_and_weights_average_one() -> None:
    rows = [Example("drill", "a", "A", 3.0, 2), Example("drill", "b", "B", 1.0, 1),
            Example("drill", "c", "C", 0.5, 0), Example("Drill", "a", "A", 1.0, 1),
            Example("paint", "d", "D", 1.0, 1)]
    mined = {"drill": [("b", "B"), ("e", "E")], "paint": [("a", "A")]}
    pairs = build_pairs(rows, mined=mined, negatives_per_pair=2, seed=SEED)
    assert len(pairs) == 3  # (drill, a), (drill, b), (paint, d)
    assert np.mean([p.weight for p in pairs]) == pytest.approx(1.0)
    drill_a = next(p for p in pairs if p.query.lower() == "drill" and p.product_id == "a")
    assert drill_a.weight > next(p for p in pairs if p.product_id == "b").weight  # 3 + 1 evidence vs 1
    for p in pairs:
        assert not {pid for pid, _ in p.negatives} & p.positives
    assert [pid for pid, _ in drill_a.negatives] == ["c", "e"]  # labelled first, mined fill up


class _FakeTokens:
    def __call__(self, texts: list[str]) -> tuple[list[str], None, None]:
        return list(texts), None, None


class _FakeModule:
    """Fixed unit vectors per text: the loss's arithmetic without a transformer."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        import torch

        self.vectors = {k: torch.nn.functional.normalize(torch.tensor(v, dtype=torch.float32), dim=0) for k, v in vectors.items()}

    def __call__(self, texts: list[str], _mask: None, _types: None) -> object:
        import torch

        return torch.stack([self.vectors[t] for t in texts])


def test_loss_weights_each_pair_and_masks_the_query_s_other_answers() -> None:
    module = _FakeModule({"q": [1, 0, 0, 0], "r": [0, 1, 0, 0], "A": [1, 0.2, 0, 0], "B": [0.9, 0.5, 0, 0],
                          "C": [0, 1, 0.1, 0]})
    tokens = _FakeTokens()

    def loss(batch: list[Pair]) -> float:
        return float(pairs_loss(module, tokens, batch, temperature=0.1, dims=(4, 2)))

    a = Pair("q", "a", "A", 1.0, (), frozenset({"a"}))
    c = Pair("r", "c", "C", 1.0, (), frozenset({"c"}))
    base = loss([a, c])
    heavy = loss([Pair("q", "a", "A", 3.0, (), frozenset({"a"})), c])
    assert heavy > base  # the same pair's term, counted three times
    assert loss([a, c]) == pytest.approx(base)  # deterministic
    # B is another answer to q: unmasked it is a negative that hurts, masked it is ignored
    b_unknown = Pair("q", "b", "B", 1.0, (), frozenset({"b"}))
    b_known = Pair("q", "b", "B", 1.0, (), frozenset({"a", "b"}))
    a_known = Pair("q", "a", "A", 1.0, (), frozenset({"a", "b"}))
    assert loss([a_known, b_known]) < loss([a, b_unknown])
    # a hard negative enters every row's softmax
    with_negative = loss([Pair("q", "a", "A", 1.0, (("c", "C"),), frozenset({"a"})), c])
    assert with_negative == pytest.approx(base)  # C is already a column (c's product): not duplicated
    hard = loss([Pair("q", "a", "A", 1.0, (("b", "B"),), frozenset({"a"})), c])
    assert hard > base


# ------------------------------------------------------------------------------ a real training run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Fine-tune on the mini set's training rows: stopped by the time budget after one step, then resumed."""
    rows = examples_from_labelled(load_labelled_set(FIXTURE))
    splits = make_splits(rows, test_fraction=0.2, seed=SEED)
    pairs = build_pairs(splits.train, negatives_per_pair=1, seed=SEED)
    out = tmp_path_factory.mktemp("train")
    cfg = TrainConfig(batch_size=8, max_steps=8, lr=8e-5, max_length=32, checkpoint_every=4, seed=SEED)
    first = train(pairs, out, replace(cfg, max_minutes=1e-6), eval_pairs=pairs,
                  progress=False)
    second = train(pairs, out, cfg, eval_pairs=pairs, progress=False)
    return {"splits": splits, "pairs": pairs, "first": first, "second": second, "out": out}


def test_training_lowers_the_loss_and_resumes_after_the_time_budget(trained: dict) -> None:  # type: ignore[type-arg]
    first, second = trained["first"], trained["second"]
    assert first.steps == 1 and "time budget" in first.stopped, first.stopped
    progress = orjson.loads((trained["out"] / "checkpoint" / "progress.json").read_bytes())
    assert progress["step"] == 8
    assert second.resumed_from == 1 and second.steps == 8 and second.stopped == "done"
    assert second.pairs_seen > 0 and second.seconds_per_10k_pairs > 0
    # measured with dropout off on the same pairs: before any step vs after the last
    assert second.eval_loss_after < 0.7 * first.eval_loss_before, (first.eval_loss_before, second.eval_loss_after)
    with pytest.raises(ModelError, match="another run"):
        train(trained["pairs"][:-1], trained["out"], TrainConfig(batch_size=8, max_steps=8), progress=False)


def test_fine_tuned_export_matches_torch_and_differs_from_the_base(trained: dict, model_dir: Path,  # type: ignore[type-arg]
                                                                    tmp_path: Path) -> None:
    m = register(tmp_path, "demo", trained["second"].model_dir, data={"source": "labelled:eval-mini"})
    assert m.status == "candidate" and m.parity_max_abs_diff <= PARITY_TOLERANCE
    exported = tmp_path / "tenants" / "demo" / m.version
    onnx = OnnxEmbedder(exported).embed(TEXTS)
    torch_ref = TorchReference(trained["second"].model_dir).embed(TEXTS)
    assert np.abs(onnx - torch_ref).max() < PARITY_TOLERANCE
    assert np.abs(onnx - OnnxEmbedder(model_dir).embed(TEXTS)).max() > 1e-3  # it did learn something
    assert list_versions(tmp_path, "demo") == [m]
    assert m.content_hash == read_version(tmp_path, "demo", m.version).content_hash


def _degraded(src: Path, dst: Path) -> Path:
    """The fine-tuned model with heavy seeded noise on every weight: a candidate that must lose."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(src))
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * p.std().clamp(min=1e-3) * 0.8)
    model.save_pretrained(str(dst))
    shutil.copy(src / "tokenizer.json", dst / "tokenizer.json")
    return dst


@pytest.fixture(scope="module")
def registry(trained: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:  # type: ignore[type-arg]
    models_dir = tmp_path_factory.mktemp("models")
    good = register(models_dir, "demo", trained["second"].model_dir, version="v1-good")
    bad_dir = _degraded(trained["second"].model_dir, tmp_path_factory.mktemp("bad") / "model")
    bad = register(models_dir, "demo", bad_dir, version="v2-bad")
    return {"dir": models_dir, "good": good, "bad": bad}


def test_gate_rejects_a_worse_candidate_and_records_why(registry: dict, trained: dict,  # type: ignore[type-arg]
                                                        model_dir: Path) -> None:
    models_dir = registry["dir"]
    tests = trained["splits"].tests
    assert set(tests) == {"query", "product"}  # undated rows: no time split
    result = run_gate(models_dir, "demo", "v2-bad", tests, base_dir=model_dir, config=GateConfig(0.01))
    assert not result.promoted
    assert serving_version(models_dir, "demo") is None  # the base model still serves
    m = read_version(models_dir, "demo", "v2-bad")
    assert m.status == "candidate"
    assert "did not beat the serving model" in m.reason and "against the base model" in m.reason
    assert set(m.metrics) == set(tests)
    assert any(s["candidate"] < s["serving"] for s in m.metrics.values())


def test_gate_promotes_a_candidate_that_beats_serving_on_every_split(registry: dict, trained: dict,  # type: ignore[type-arg]
                                                                     model_dir: Path, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(registry["dir"], models_dir)
    promote(models_dir, "demo", "v2-bad", reason="a bad model serving, to be replaced")
    result = run_gate(models_dir, "demo", "v1-good", trained["splits"].tests, base_dir=model_dir,
                      config=GateConfig(0.01))
    assert result.promoted, result.reason
    assert serving_version(models_dir, "demo") == "v1-good"
    assert read_version(models_dir, "demo", "v1-good").status == "serving"
    retired = read_version(models_dir, "demo", "v2-bad")
    assert retired.status == "retired" and "replaced by v1-good" in retired.reason
    # the same candidate against itself gains nothing, so it would not pass
    assert not decide({"query": 0.8}, {"query": 0.8}, GateConfig(0.01)).promoted
    assert not decide({"query": 0.9, "product": 0.5}, {"query": 0.8, "product": 0.6}, GateConfig(0.01)).promoted
    assert decide({"query": 0.9, "product": 0.7}, {"query": 0.8, "product": 0.6}, GateConfig(0.01)).promoted


def test_promote_and_rollback_flip_the_serving_pointer(registry: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    models_dir = tmp_path / "models"
    shutil.copytree(registry["dir"], models_dir)
    promote(models_dir, "demo", "v1-good")
    assert read_pointer(models_dir, "demo") == (models_dir / "tenants" / "demo" / "v1-good").resolve()
    promote(models_dir, "demo", "v2-bad", reason="try it")
    assert serving_version(models_dir, "demo") == "v2-bad"
    assert read_version(models_dir, "demo", "v1-good").status == "retired"
    assert rollback(models_dir, "demo", reason="conversion fell") == "v1-good"
    assert serving_version(models_dir, "demo") == "v1-good"
    bad = read_version(models_dir, "demo", "v2-bad")
    assert bad.status == "retired" and "conversion fell" in bad.reason
    assert bad.history[0]["status"] == "candidate"
    assert [h["status"] for h in bad.history][-2:] == ["serving", "retired"]
    assert rollback(models_dir, "demo") is None  # past the first promotion: the base model
    assert read_pointer(models_dir, "demo") is None
    assert read_version(models_dir, "demo", "v1-good").status == "retired"
    with pytest.raises(ModelError, match="nothing to roll back"):
        rollback(models_dir, "demo")
    with pytest.raises(ModelError, match="no model version"):
        promote(models_dir, "demo", "v9")
    assert not list((models_dir / "tenants" / "demo").glob(".serving-*"))  # no temporary file left behind


def test_models_commands_list_promote_and_rollback(registry: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    models_dir = tmp_path / "models"
    shutil.copytree(registry["dir"], models_dir)
    env = {"SHOPRANK_MODELS_DIR": str(models_dir)}
    listed = run_cli("models", "list", "--tenant", "demo", env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "v1-good" in listed.stdout and "v2-bad" in listed.stdout and "serving: base model" in listed.stdout
    up = run_cli("models", "promote", "--tenant", "demo", "v1-good", env=env)
    assert up.returncode == 0 and serving_version(models_dir, "demo") == "v1-good", up.stderr[-2000:]
    down = run_cli("models", "rollback", "--tenant", "demo", "--reason", "test", env=env)
    assert down.returncode == 0 and "base model serving" in down.stdout
    missing = run_cli("models", "promote", "--tenant", "demo", "v9", env=env)
    assert missing.returncode == 1 and "shoprank models list" in missing.stderr and "Traceback" not in missing.stderr
    nothing = run_cli("models", "train", "--tenant", "demo", env=env)
    assert nothing.returncode == 1 and "--labelled" in nothing.stderr


def test_models_train_command_trains_registers_and_gates(int8_model_dir: Path, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    # The exported base model, as `shoprank models export` leaves it: the int8 export serves by default.
    shutil.copytree(int8_model_dir, models_dir / int8_model_dir.name)
    env = {"SHOPRANK_MODELS_DIR": str(models_dir)}
    done = run_cli("models", "train", "--tenant", "demo", "--labelled", str(FIXTURE), "--max-steps", "2",
                   "--batch-size", "8", "--max-minutes", "2", "--hard-negatives", "2", env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    [m] = list_versions(models_dir, "demo")
    assert set(m.metrics) == {"query", "product"} and m.reason.startswith("gate against the base model")
    assert m.data["source"] == "labelled:eval-mini" and m.train["report"]["steps"] == 2
    assert (m.status == "serving") == (serving_version(models_dir, "demo") == m.version)
    assert f"{m.version}: {m.status}" in done.stdout
    assert not (models_dir / "training" / "demo" / "checkpoint").exists()  # finished: nothing to resume
