"""Where the arithmetic runs: the device a stage asks for, and the precision it runs in there."""

from __future__ import annotations

import contextlib

import torch

from worldmodels.errors import ConfigError


def select_device(name: str) -> torch.device:
    """"auto": CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'train.device' is cuda but no CUDA device is available")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (Hopper and Ampere run it at full speed); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
