"""The online ranker: features, engagement counters, position bias and the River models."""

from models.ranker.engagement import Engagement
from models.ranker.features import FEATURES, candidate_features
from models.ranker.online import Candidate, Objective, OnlineRanker, Ranked, RankerConfig
from models.ranker.propensity import Propensity

__all__ = ["FEATURES", "Candidate", "Engagement", "Objective", "OnlineRanker", "Propensity", "Ranked",
           "RankerConfig", "candidate_features"]
