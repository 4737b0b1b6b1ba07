"""Operations: the MLflow model registry, the embedded Redis server, named locks and the settings of
the production stack.

May import only the top-level modules (``recsys.config``, ``recsys.errors``).
"""
