"""Offline evaluation: ranking metrics by the protocol of DESIGN.md, the baselines (MostPop, EASE,
iALS) and the quality metrics of similar-movie lists.

May import ``recsys.data`` and the top-level modules; never torch, MLflow or Feast.
"""
