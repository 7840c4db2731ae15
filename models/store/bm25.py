"""BM25 sparse vectors, computed here with Qdrant Edge's ``Bm25`` for *both* backends.

Why client-side for the server too: the server's own BM25 inference depends on its version and
configuration, while one tokenizer (English stemmer and stopwords, ``k=1.2``, ``b=0.75``,
``avg_len=256``) on both sides makes an Edge shard and a server collection score a query the same way.
The collection's sparse vector has the IDF modifier, so the engine multiplies in the inverse
document frequency at query time; documents carry only the saturated, length-normalised term
frequency (``embed_document``) and queries weight each distinct term 1.0 (``embed_query``).

Changing the configuration changes every document vector: re-index the catalogue afterwards.
"""

from __future__ import annotations

from functools import cache

from qdrant_edge import Bm25, SparseVector

__all__ = ["document_vector", "query_vector"]


@cache
def _model() -> Bm25:
    return Bm25()


def document_vector(text: str) -> SparseVector:
    """The sparse vector a product's text is indexed with (empty for text without terms)."""
    return _model().embed_document(text or "")


def query_vector(text: str) -> SparseVector | None:
    """The sparse vector of a query, or ``None`` when it has no indexable term (empty, stopwords only)."""
    vector = _model().embed_query(text or "")
    return vector if vector.indices else None
