"""Torch-free scoring: a model version as its consumers see it (ONNX sessions, id maps, K), the
masked top-K kernel, and batch scoring of users and movies with ONNX Runtime.

May import ``recsys.data`` and the top-level modules; never torch, Feast or MLflow, so nightly
scoring and the HTTP server start fast.
"""
