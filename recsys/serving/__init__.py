"""The MLflow pyfunc models behind the HTTP endpoint (``mlflow models serve``) and their
models-from-code entry files.

May import ``recsys.runtime``, ``recsys.online`` and the top-level modules; never torch or Feast.
"""
