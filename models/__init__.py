"""Embedding, ranking and training. Never imports ``streams``: everything here runs without Kafka."""

__all__: list[str] = []
