"""Where the two-tower trains and in what precision: ``train.device`` and ``train.precision`` resolved
against what torch and the processor report, and a one-line description for logs and benchmarks."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from recsys.config_learning import TrainConfig
from recsys.errors import ConfigError

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # bfloat16 products in hardware, not emulated


def cpu_flags() -> set[str]:
    """The processor's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware (CUDA: compute capability 8 or above)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    return bool(cpu_flags() & set(BF16_CPU_FLAGS))


@dataclass(frozen=True)
class Hardware:
    """The resolved device and the dtype of the loss's products."""

    device: torch.device
    dtype: torch.dtype

    @classmethod
    def resolve(cls, cfg: TrainConfig) -> Hardware:
        """``cfg.device`` and ``cfg.precision`` resolved; ConfigError for a device torch cannot see."""
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device=cuda, but torch sees no CUDA device (use auto or cpu)")
        use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        device = torch.device("cuda" if use_cuda else "cpu")
        low = cfg.precision == "bfloat16" or (cfg.precision == "auto" and native_bfloat16(device))
        return cls(device, torch.bfloat16 if low else torch.float32)

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else cpu_model()
        return f"{self.device.type} ({name}), loss products in {str(self.dtype).removeprefix('torch.')}"
