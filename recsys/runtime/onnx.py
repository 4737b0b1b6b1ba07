"""ONNX Runtime sessions as every runtime bundle opens them: CPU, a set number of threads, idle
threads that do not spin, and an error that names a damaged graph instead of onnxruntime's own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from recsys.errors import DataError

DAMAGED = (
    "a damaged copy of a model version: delete its folder under $RECSYS_HOME/models to "
    "download it again from the registry"
)


def session(model: Path | bytes, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.log_severity_level = 3
    # Idle intra-op threads would otherwise spin between calls and take the cores the top-K
    # kernel (recsys.runtime.topk) runs on right after each MatMul.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
        where = "an in-memory graph" if isinstance(model, bytes) else str(model)
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"cannot load the ONNX graph {where} ({reason}); {DAMAGED}") from exc
