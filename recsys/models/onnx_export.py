"""``torch.onnx.export`` (dynamo) of a module into one self-contained ONNX file: what both models'
exports share."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn


def export_graph(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    names: list[str],
    outputs: list[str],
    shapes: dict,
    path: Path,
) -> None:
    """torch.onnx.export (dynamo) of ``module`` into one self-contained file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    # The exporter warns about every missing torchvision op it could register; none is used here.
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                inputs,
                dynamo=True,
                input_names=names,
                output_names=outputs,
                dynamic_shapes=shapes,
                external_data=False,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    if program is None:  # only with dynamo=False, which this export never asks for
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)
