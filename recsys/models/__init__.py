"""PyTorch models: the two-tower recommender and the similar-movies item tower, their training
loops and their ONNX export.

The only subpackage that imports torch. May import ``recsys.data``, ``recsys.evaluation`` and
``recsys.runtime`` (the bundles its exports are read back as) and the top-level modules.
"""
