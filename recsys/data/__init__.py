"""Data products: MovieLens releases and snapshots, the evaluation protocol, prepared splits, data
validation, the pairwise table of similar movies and item features, and the generated releases.

Owns everything that reads or writes a data set. May import ``recsys.config``, ``recsys.errors`` and
``recsys.files``; never torch, MLflow, Feast or another subpackage of ``recsys``.
"""
