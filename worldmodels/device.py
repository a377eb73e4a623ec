"""Where the arithmetic runs: the device a stage asks for, and the precision it runs in there."""

from __future__ import annotations

import contextlib
import functools
import hashlib
from typing import Any, Callable

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


CPU_CHUNK = 8  # rows per call of the models on a CPU (see in_fixed_chunks)


def in_fixed_chunks(fn: Callable[..., Any], *rows: torch.Tensor, chunk: int = CPU_CHUNK) -> Any:
    """`fn(*rows)`, computed on a CPU in chunks of exactly `chunk` rows (the last one padded with zeros).

    oneDNN and MKL pick their kernels by batch size, so a frame encoded in a batch of 25 can come
    out different in the last bit from the same frame in a batch of 64, which now and then flips
    an argmax and changes an episode. In chunks of one fixed size, a row's result depends on the
    row alone: results do not depend on `controller.batch`, `evaluate.batch`, `encode.batch_size`
    or on how episodes are split over tasks and ranks. Small chunks waste little on padding when
    few episodes are left in a batch: 8 rows cost the demo's controller 6% against plain batches,
    32 rows 26%. (On a GPU, where no bitwise promise is made, `fn` runs on the whole batch.)
    """
    n = rows[0].shape[0]
    if rows[0].device.type != "cpu":
        return fn(*rows)
    pad = -n % chunk
    if pad:
        rows = tuple(torch.cat([r, r.new_zeros((pad, *r.shape[1:]))]) for r in rows)
    outs = [fn(*(r[i:i + chunk] for r in rows)) for i in range(0, n + pad, chunk)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts)[:n] for parts in zip(*outs))
    return torch.cat(outs)[:n]


@functools.cache
def cpu_kernels() -> str:
    """A fingerprint of how this machine's CPU kernels round: V and M, in small fixed sizes and
    fixed weights, run forwards and backwards; 12 hex digits of the sha256 of every output and
    gradient.

    oneDNN and ATen pick kernels by the CPU's vector instructions (AVX2, AVX-512, ...) and by the
    caps set in the environment (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY), and kernels of two
    kinds round differently: a stage resumed on a CPU of another fingerprint does not end with
    the artifacts an uninterrupted run makes. The fingerprint says so from the kernels' results
    themselves, whatever the flags are called. It is computed once per process (about 0.2 s).
    """
    from worldmodels.mdnrnn import MDNRNN
    from worldmodels.vae import ConvVAE

    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae, mdnrnn = ConvVAE(32), MDNRNN()
    recon, mu, logvar = vae(torch.rand(CPU_CHUNK, 3, 64, 64, generator=g), torch.randn(CPU_CHUNK, 32, generator=g))
    *outs, _ = mdnrnn(torch.randn(CPU_CHUNK, 4, 32, generator=g), torch.randint(6, (CPU_CHUNK, 4), generator=g))
    sum(t.sum() for t in (recon, mu, logvar, *outs)).backward()
    digest = hashlib.sha256()
    for t in (recon, mu, logvar, *outs, *(p.grad for p in (*vae.parameters(), *mdnrnn.parameters()))):
        digest.update(t.detach().numpy().tobytes())
    return digest.hexdigest()[:12]


def kernels_on(device: torch.device) -> str | None:
    """cpu_kernels() for a stage computing on a CPU; None on a GPU, where no bitwise promise is made."""
    return cpu_kernels() if device.type == "cpu" else None


def kernels_warning(what: str, made: str, here: str) -> str:
    """The warning for work resumed with other CPU kernels than the ones `what` (past tense) was made with."""
    return (f"{what} where the CPU kernels round differently (kernels {made} there, {here} here: another kind of "
            "CPU, other ONEDNN_MAX_CPU_ISA or ATEN_CPU_CAPABILITY caps, or another number of torch threads); "
            "resuming, but from here the artifacts differ in the last bits from an uninterrupted run's")
