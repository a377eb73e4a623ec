"""V's encoder in 8-bit integers (`vae.precision=int8`): post-training static quantization.

On a CPU, V's encoder is about half of what a real-game step costs (the emulator is the other
half), and its four convolutions run at the CPU's float32 multiply-add rate. Their int8 kernels
(torch's quantized CPU backend, VNNI on AVX-512) do the same convolutions several times faster:
on batches of 32, 90 us a frame against 370 on one core (see benchmarks/controller.py).

The quantized encoder is a function of V's float weights and four numbers, the largest output of
each convolution (after its ReLU) over calibration frames of the run's own data, which train-vae
stores with V (`ranges`, over the frames of `spread` episodes). So it is rebuilt identically
wherever V is loaded.
- Frames enter as pixels / 255: quantized at scale 1/255 they are exact.
- Each convolution's output is quantized to 0..255 over [0, its range]; its weights per output
  channel, symmetrically, to 7 bits (-63..63): a pixel times a weight, summed in pairs, then fits
  the 16 bits that CPUs without VNNI accumulate in, so the sums are exact integers on every x86 CPU.
- mu and logvar stay float32 (a 1,024-wide dense layer: under 1% of the encoder's work).
- Integer sums do not depend on which rows share a batch: a frame's z is the same in any batch.

This is the one place the project uses torch's quantized modules (`torch.ao.nn.quantized`). torch
deprecates the quantized tensor types they rest on (pytorch/pytorch#184982): `check()` says in one
line when an upgrade removed them (tests/test_adapters.py).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

CALIBRATION_EPISODES = 8  # spread over the data; their frames (a few thousand) calibrate the ranges
WEIGHT_LEVELS = 63  # 7 bits a side: see the module's docstring

_DEPRECATION = "torch.quantize_per_tensor, torch.quantize_per_channel and other quantized tensor creation"


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """Without torch's deprecation warning for quantized tensors, which it raises on every build."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION)
        yield


def _convolutions(encoder: nn.Sequential) -> list[nn.Conv2d]:
    """The encoder's convolutions, each followed by a ReLU, then a Flatten (worldmodels.vae.ConvVAE)."""
    layers = list(encoder)
    convs = layers[0:-1:2]
    if not (all(isinstance(c, nn.Conv2d) for c in convs) and all(isinstance(r, nn.ReLU) for r in layers[1:-1:2])
            and isinstance(layers[-1], nn.Flatten)):
        raise TypeError("int8: V's encoder is not (Conv2d, ReLU) x N, Flatten")
    return convs


@torch.no_grad()
def ranges(encoder: nn.Sequential, frames: np.ndarray, batch: int = 256) -> list[float]:
    """The largest output of each convolution (after its ReLU) over `frames` (uint8 [N, 64, 64, 3])."""
    from worldmodels.vae import to_input

    convs = _convolutions(encoder)
    device = convs[0].weight.device
    top = [0.0] * len(convs)
    for start in range(0, len(frames), batch):
        h = to_input(torch.from_numpy(frames[start:start + batch]).to(device))
        for i, conv in enumerate(convs):
            h = torch.relu(conv(h))
            top[i] = max(top[i], float(h.max()))
    return top


def spread(indices: np.ndarray, count: int = CALIBRATION_EPISODES) -> list[int]:
    """`count` of `indices` evenly spread from the first to the last (all of them if fewer)."""
    picks = np.unique(np.linspace(0, len(indices) - 1, min(count, len(indices))).round().astype(int))
    return [int(indices[i]) for i in picks]


def quantized(encoder: nn.Sequential, top: list[float]) -> nn.Sequential:
    """`encoder` (float, on the CPU) with int8 convolutions quantized by the ranges `top` (see `ranges`)."""
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    convs = _convolutions(encoder)
    if len(top) != len(convs) or not all(r >= 0 for r in top):
        raise ValueError(f"int8: {len(convs)} ranges >= 0 expected, got {top}")
    with _quietly():
        layers: list[nn.Module] = [nnq.Quantize(1 / 255, 0, torch.quint8)]
        for conv, top_i in zip(convs, top):
            q = nniq.ConvReLU2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
            w = conv.weight.detach().float()
            scale = (w.abs().amax(dim=(1, 2, 3)) / WEIGHT_LEVELS).clamp(min=1e-12).double()
            weights = torch.quantize_per_channel(w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8)
            q.set_weight_bias(weights, conv.bias.detach().float())
            q.scale, q.zero_point = max(top_i, 1e-6) / 255, 0  # a convolution that never fired outputs 0 all the same
            layers.append(q)
        layers += [nnq.DeQuantize(), nn.Flatten()]
    return nn.Sequential(*layers).eval()


def check() -> None:
    """A RuntimeError naming what an upgrade removed, where torch no longer has the int8 modules."""
    try:
        import torch.ao.nn.intrinsic.quantized as nniq  # noqa: F401
        import torch.ao.nn.quantized as nnq  # noqa: F401

        encoder = nn.Sequential(nn.Conv2d(3, 4, 4, stride=2), nn.ReLU(), nn.Flatten())
        with _quietly(), torch.no_grad():
            quantized(encoder, [1.0])(torch.rand(2, 3, 8, 8))
    except (ImportError, AttributeError, RuntimeError) as exc:
        raise RuntimeError(f"torch {torch.__version__} no longer runs int8 convolutions as worldmodels.int8 "
                           f"builds them ({type(exc).__name__}: {exc}); vae.precision=int8 needs torch's "
                           "quantized modules") from exc
