"""Fine-tune the bundled MiniLM on a shop's pairs: weighted contrastive loss, Matryoshka over dimensions.

The loss, per pair *i* in a batch, is the cross-entropy of picking its product among every product of
the batch (in-batch negatives) and every hard negative of the batch, at temperature ``temperature``;
columns that are known answers to query *i* are masked, so a query is never pushed away from its own
answers. Each term is multiplied by the pair's business weight (Generalized Contrastive Learning,
arXiv 2404.08535: a purchase with a large margin pulls harder than a click). The same loss is taken
on the first 384, 256, 128 and 64 dimensions, renormalised, and averaged (Matryoshka representation
learning), so the served vectors can be truncated (models.embedder.TruncatedEmbedder).

CPU only and bounded: ``max_minutes`` stops cleanly after the running step, with a checkpoint
(weights, optimizer, scheduler, step, RNG) in ``out_dir/checkpoint`` from which a second call with the
same pairs and config resumes. The finished model is a transformers folder in ``out_dir/model`` that
:func:`models.export.export_model` turns into ONNX.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from models.exceptions import ModelError
from models.export import base_model_source, pooled_module
from models.training.pairs import Pair

__all__ = ["TrainConfig", "TrainReport", "pairs_loss", "train"]

_CHECKPOINT = "checkpoint"
_MODEL = "model"


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters, stored under the same names in the checkpoint and the model's manifest."""

    batch_size: int = 32
    epochs: int = 1
    #: Stop after this many optimizer steps (None: after ``epochs``).
    max_steps: int | None = None
    #: Stop cleanly, with a checkpoint, once this much wall time has passed (None: no limit).
    max_minutes: float | None = None
    lr: float = 3e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    temperature: float = 0.05
    matryoshka_dims: tuple[int, ...] = (384, 256, 128, 64)
    #: Tokens per text while training; shop titles are short and attention cost grows with length.
    max_length: int = 64
    checkpoint_every: int = 50
    threads: int | None = None
    seed: int = 0


@dataclass
class TrainReport:
    """What a run did. ``losses`` is the training loss of every step this call ran."""

    model_dir: Path
    steps: int
    total_steps: int
    pairs_seen: int
    seconds: float
    stopped: str
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None

    @property
    def seconds_per_10k_pairs(self) -> float:
        return self.seconds / self.pairs_seen * 10_000 if self.pairs_seen else float("nan")

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["model_dir"] = str(self.model_dir)
        out["seconds_per_10k_pairs"] = self.seconds_per_10k_pairs
        out["losses"] = [round(x, 5) for x in self.losses]
        return out


def _seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Tokens:
    """Tokenizer of the model folder, truncated to the training length."""

    def __init__(self, model_dir: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(max_length)
        self.tok.enable_padding()

    def __call__(self, texts: Sequence[str]) -> tuple[Any, Any, Any]:
        import torch

        enc = self.tok.encode_batch(list(texts))
        return (torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc]),
                torch.tensor([e.type_ids for e in enc]))


def pairs_loss(module: Any, tokens: Any, batch: Sequence[Pair], *, temperature: float,
               dims: Sequence[int]) -> Any:
    """The weighted, masked, Matryoshka-averaged contrastive loss of one batch (a scalar tensor)."""
    import torch
    import torch.nn.functional as F

    col_ids = [p.product_id for p in batch]
    col_texts = [p.text for p in batch]
    seen = set(col_ids)
    for p in batch:
        for pid, text in p.negatives:
            if pid not in seen:  # one column per product: duplicates would double-count it
                seen.add(pid)
                col_ids.append(pid)
                col_texts.append(text)
    q = module(*tokens([p.query for p in batch]))
    d = module(*tokens(col_texts))
    # A column is masked for row i when it is a known answer to query i, other than row i's own.
    mask = torch.tensor([[j != i and cid in p.positives for j, cid in enumerate(col_ids)]
                         for i, p in enumerate(batch)])
    weights = torch.tensor([p.weight for p in batch], dtype=q.dtype)
    target = torch.arange(len(batch))
    total = q.new_zeros(())
    for dim in dims:
        qd = F.normalize(q[:, :dim], dim=1)
        dd = F.normalize(d[:, :dim], dim=1)
        logits = (qd @ dd.T / temperature).masked_fill(mask, float("-inf"))
        per_pair = F.cross_entropy(logits, target, reduction="none")
        total = total + (weights * per_pair).sum() / len(batch)
    return total / len(dims)


def _fingerprint(pairs: Sequence[Pair], config: TrainConfig, base: str) -> str:
    """What a checkpoint belongs to: resuming with other data or settings would be a different run."""
    h = hashlib.sha256(base.encode())
    keep = {k: v for k, v in asdict(config).items() if k not in ("max_minutes", "max_steps", "checkpoint_every",
                                                                  "threads")}
    h.update(orjson.dumps(keep, option=orjson.OPT_SORT_KEYS))
    for p in pairs:
        h.update(f"{p.query}\x00{p.product_id}\x00{p.weight:.6f}\x00{len(p.negatives)}\n".encode())
    return h.hexdigest()[:16]


def _order(n: int, epoch: int, seed: int) -> list[int]:
    idx = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(idx)
    return idx


def _save_checkpoint(out_dir: Path, module: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> None:
    """Write the checkpoint beside the old one, then swap directories: a crash leaves one whole checkpoint."""
    import torch

    final = out_dir / _CHECKPOINT
    tmp = out_dir / f".{_CHECKPOINT}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "state.pt")
    (tmp / "progress.json").write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
    old = out_dir / f".{_CHECKPOINT}-old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _eval_loss(module: Any, tokens: Any, pairs: Sequence[Pair], config: TrainConfig) -> float:
    """Mean loss over ``pairs`` with dropout off: comparable before and after training."""
    import torch

    was_training = module.training
    module.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(pairs), config.batch_size):
            batch = pairs[start : start + config.batch_size]
            if len(batch) < 2:
                continue
            total += float(pairs_loss(module, tokens, batch, temperature=config.temperature,
                                      dims=config.matryoshka_dims)) * len(batch)
            n += len(batch)
    module.train(was_training)
    return total / n if n else float("nan")


def train(pairs: Sequence[Pair], out_dir: Path, config: TrainConfig | None = None, *,
          base_dir: Path | None = None, eval_pairs: Sequence[Pair] | None = None,
          progress: bool = True) -> TrainReport:
    """Fine-tune ``base_dir`` (default: the bundled MiniLM) on ``pairs``; resume from ``out_dir`` if it has a checkpoint.

    ``eval_pairs`` (e.g. a sample of the training pairs, or held-out pairs) get their loss measured
    with dropout off before and after, in the report. Raises :class:`ModelError` for fewer than two
    pairs (a contrastive batch needs at least one other column).
    """
    try:
        import torch
    except ImportError as exc:
        raise ModelError("training needs torch and transformers: pip install 'shoprank[train]'") from exc

    config = config or TrainConfig()
    if len(pairs) < 2:
        raise ModelError(f"training needs at least 2 pairs, got {len(pairs)} — give it more labelled or "
                         "interaction data")
    bad = [d for d in config.matryoshka_dims if d < 1]
    if bad:
        raise ValueError(f"matryoshka_dims must be positive, got {bad}")
    base_dir, base_source = (base_dir, str(base_dir)) if base_dir is not None else base_model_source()
    if config.threads:
        torch.set_num_threads(config.threads)
    _seed_all(config.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(pairs, config, base_source)
    ckpt = out_dir / _CHECKPOINT
    saved = orjson.loads((ckpt / "progress.json").read_bytes()) if (ckpt / "progress.json").exists() else None
    if saved is not None and saved.get("fingerprint") != fingerprint:
        raise ModelError(f"{ckpt} belongs to another run (other pairs or settings) — use another --out or delete it")

    module = pooled_module(base_dir)
    hidden = int(module.encoder.config.hidden_size)
    if max(config.matryoshka_dims) > hidden:
        raise ValueError(f"matryoshka_dims must be at most {hidden}, got {max(config.matryoshka_dims)}")
    tokens = _Tokens(base_dir, config.max_length)
    batches_per_epoch = math.ceil(len(pairs) / config.batch_size)
    total_steps = batches_per_epoch * config.epochs
    if config.max_steps is not None:  # overrides epochs: a small set is cycled through as often as it takes
        total_steps = config.max_steps
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, int(total_steps * config.warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then linear decay to 0
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup)))

    step = 0
    if saved is not None:
        blob = torch.load(ckpt / "state.pt", weights_only=False)
        module.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["torch_rng"])
        step = int(saved["step"])
    resumed_from = step

    report = TrainReport(out_dir / _MODEL, step, total_steps, 0, 0.0, "done", resumed_from)
    if eval_pairs:
        report.eval_loss_before = _eval_loss(module, tokens, eval_pairs, config)

    bar = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        bar = Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                       TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
        task = bar.add_task("train", total=total_steps, completed=step, loss="–")
        bar.start()
    module.train()
    started = time.perf_counter()
    deadline = started + config.max_minutes * 60 if config.max_minutes is not None else None

    def state() -> dict[str, Any]:
        return {"step": step, "total_steps": total_steps, "fingerprint": fingerprint, "config": asdict(config),
                "base": base_source}

    try:
        while step < total_steps:
            epoch, index = divmod(step, batches_per_epoch)
            order = _order(len(pairs), epoch, config.seed)
            batch = [pairs[i] for i in order[index * config.batch_size : (index + 1) * config.batch_size]]
            if len(batch) < 2:  # a lone last pair has nothing to be contrasted with
                step += 1
                continue
            loss = pairs_loss(module, tokens, batch, temperature=config.temperature, dims=config.matryoshka_dims)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            report.pairs_seen += len(batch)
            report.losses.append(loss.item())
            if bar is not None:
                bar.update(task, completed=step, loss=f"{report.losses[-1]:.4f}")
            if step % config.checkpoint_every == 0 and step < total_steps:
                _save_checkpoint(out_dir, module, optimizer, scheduler, state())
            if deadline is not None and time.perf_counter() >= deadline and step < total_steps:
                report.stopped = f"time budget of {config.max_minutes} min reached at step {step}/{total_steps}"
                break
    finally:
        if bar is not None:
            bar.stop()
    report.seconds = time.perf_counter() - started
    report.steps = step
    _save_checkpoint(out_dir, module, optimizer, scheduler, state())
    module.eval()
    if eval_pairs:
        report.eval_loss_after = _eval_loss(module, tokens, eval_pairs, config)
    _save_model(module, base_dir, out_dir / _MODEL)
    (out_dir / "train-report.json").write_bytes(orjson.dumps(report.summary(), option=orjson.OPT_INDENT_2))
    return report


def _save_model(module: Any, base_dir: Path, target: Path) -> None:
    """A transformers folder (weights, config, tokenizer) that models.export.export_model reads."""
    tmp = target.parent / f".{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    module.encoder.save_pretrained(str(tmp))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (base_dir / name).exists():
            shutil.copy(base_dir / name, tmp / name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
