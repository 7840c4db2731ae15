"""Per-shop fine-tuning of the embedding model: data, training, a versioned registry and a promotion gate.

Needs torch and transformers (the ``train`` extra) to train and export; the registry and the gate's
bookkeeping need only what serving needs. Runs without Kafka, like everything in ``models``.
"""

from models.training.data import (
    Example,
    OutcomeWeights,
    Splits,
    examples_from_interactions,
    examples_from_labelled,
    make_splits,
)
from models.training.pairs import Pair, build_pairs, mine_hard_negatives

__all__ = ["Example", "OutcomeWeights", "Pair", "Splits", "build_pairs", "examples_from_interactions",
           "examples_from_labelled", "make_splits", "mine_hard_negatives"]
