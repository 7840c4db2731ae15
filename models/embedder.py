"""Text embedding with ONNX Runtime: the serving path needs only onnxruntime, tokenizers and numpy."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from models.exceptions import ModelNotFound
from models.manifest import MANIFEST_NAME, ModelManifest

__all__ = ["Embedder", "OnnxEmbedder", "TruncatedEmbedder", "embed_queries"]


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of ``dimensions`` floats."""

    @property
    def version(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def embed_queries(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Embed search queries through the embedder's query path where it has one, else :meth:`Embedder.embed`.

    Queries come a few at a time between the worker's Kafka I/O; documents come in large batches.
    ONNX Runtime spreads one run over its threads, and on a busy machine a run waits for the slowest:
    at 100 searches/s on two cores, one thread for queries answered sooner than two (bench_search).
    """
    query_path = getattr(embedder, "embed_queries", None)
    return query_path(texts) if query_path is not None else embedder.embed(texts)


#: Document batches hand their arena memory back after each run: a batch of 64 long texts takes hundreds
#: of MB that the arena would otherwise keep for good; about 200 MB less resident, no slower (1,024-2,048 texts).
_SHRINK_ARENA = ort.RunOptions()
_SHRINK_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def _usable_cores() -> int:
    """Cores this process may run on (a container's cpuset, not the host's count): more runs than cores
    were slower, not faster (3 runs on 2 cores: 53 against 67 products/s in bench_indexing)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: Texts per ONNX Runtime run. Small runs were much faster on this project's CPUs: texts of 2,048 generated
#: products, one thread per run, two runs at once, measured 2026-12-06 (int8 / fp32 texts/s): 224 / 124 at
#: 64, 311 / 140 at 16, 338 / 159 at 8, 390 / 161 at 4, with the same vectors (int8 cosine to fp32 0.9945
#: at 64 and at 2). Each run pads to its longest text, and a small run's activations stay in the caches.
#: Query embedding took as long at 4 as at 64.
DEFAULT_BATCH_SIZE = 4


class OnnxEmbedder:
    """An exported model directory (see :mod:`models.export`) served by ONNX Runtime on the CPU."""

    def __init__(self, model_dir: Path, *, batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None,
                 query_threads: int | None = None) -> None:
        """``threads``: how many batches :meth:`embed` runs at once (None: one per core), each on one ONNX
        Runtime thread of one shared session. ``query_threads``: ONNX Runtime threads for
        :meth:`embed_queries` (None: one per core); any number but 1 gets a session of its own (about
        40 MB more) at the first query."""
        if not (model_dir / MANIFEST_NAME).exists():
            raise ModelNotFound(f"no exported model in {model_dir} — run `shoprank models export`")
        self.manifest = ModelManifest.read(model_dir)
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.manifest.max_length)
        self.tokenizer.enable_padding()
        self._path = str(model_dir / self.manifest.onnx_file)
        # One thread per run, several runs at once: a run spread over the cores waits at each operator
        # for its slowest thread, and on a busy machine (the broker, the event loop) one of them is often
        # descheduled. Separate runs never wait for each other: 2,000 products embedded at 84-88/s instead
        # of 70-78/s on two cores, in a quiet process (bench_indexing measures it in the worker).
        self.session = self._session(1)
        self._runs = max(1, threads or _usable_cores())
        self._pool: ThreadPoolExecutor | None = None
        self._query_threads = query_threads
        self._query_session = self.session if query_threads == 1 else None
        self._lock = threading.Lock()

    def _session(self, threads: int | None) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # ONNX Runtime's pool threads spin after each run by default. The worker runs one query batch at
        # a time between Kafka I/O, so they spun for nothing: a one-query run cost 12.9 ms of CPU for
        # 4 ms of wall time (7.6 ms without spinning), CPU the event loop and the broker needed.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(self._path, opts, providers=["CPUExecutionProvider"])

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def dimensions(self) -> int:
        return self.manifest.dimensions

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in batches of similar length (less padding: about twice the throughput),
        ``threads`` batches at a time."""
        return self._embed(texts, self.session, self._runs, _SHRINK_ARENA)

    def _embed(self, texts: Sequence[str], session: ort.InferenceSession, runs: int = 1,
               options: ort.RunOptions | None = None, batch_size: int | None = None) -> np.ndarray:
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        # Smaller batches when there are fewer texts than runs × batch_size, so that every run has work.
        size = max(1, min(batch_size or self.batch_size, -(-len(order) // runs)))
        batches = [order[start : start + size] for start in range(0, len(order), size)]
        # Longest first: the runs then end together on short batches, instead of one core idling while
        # the other embeds the longest batch last (a tail in every catalogue micro-batch of the worker).
        batches.reverse()
        if len(batches) == 1:
            out[batches[0]] = self._run([texts[i] for i in batches[0]], session, options)
            return out
        for idx, vectors in zip(batches, self._runner().map(
                lambda idx: self._run([texts[i] for i in idx], session, options), batches), strict=True):
            out[idx] = vectors
        return out

    def _runner(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._runs, thread_name_prefix="onnx-run")
        return self._pool

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (a few short texts per call) on the query session."""
        session = self._query_session
        if session is None:
            with self._lock:
                if self._query_session is None:
                    self._query_session = self._session(self._query_threads)
                session = self._query_session
        # One run for all of them, as before the document runs shrank to 4: a few short queries pad little,
        # and one run costs one pass of the interpreter's work around ONNX Runtime. (bench_search's Kafka p99
        # could not tell the two apart: 2.8-3.8x the floor either way, the VM's noise.)
        return self._embed(texts, session, batch_size=len(texts))

    def _run(self, texts: list[str], session: ort.InferenceSession, options: ort.RunOptions | None = None
             ) -> np.ndarray:
        enc = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        return session.run(None, feeds, options)[0]


class TruncatedEmbedder:
    """The first ``dimensions`` of another embedder's vectors, L2-normalised again (Matryoshka serving).

    Smaller vectors cost less memory and time; a model trained with a Matryoshka loss keeps most of its
    quality when truncated, a model trained without one (the base MiniLM) loses more (bench_vectors).
    """

    def __init__(self, inner: Embedder, dimensions: int) -> None:
        if not 0 < dimensions <= inner.dimensions:
            raise ValueError(f"dimensions must be in 1..{inner.dimensions}, got {dimensions}")
        self.inner = inner
        self._dims = dimensions

    @property
    def version(self) -> str:
        return f"{self.inner.version}-d{self._dims}"

    @property
    def dimensions(self) -> int:
        return self._dims

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._truncated(self.inner.embed(texts))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._truncated(embed_queries(self.inner, texts))

    def _truncated(self, vectors: np.ndarray) -> np.ndarray:
        out = vectors[:, : self._dims]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)
