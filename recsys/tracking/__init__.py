"""MLflow runs of each training, plots, and the promotion gates of both registered models.

May import ``recsys.data``, ``recsys.evaluation``, ``recsys.models``, ``recsys.runtime``,
``recsys.ops`` and the top-level modules.
"""
