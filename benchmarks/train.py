"""Training speed against its limits, measured in one run on this machine's device.

Prints
- the raw chunk-decode rate of a rollout store (every frame chunk read once, in order, one
  thread): the loader's physical limit;
- the frame loader alone (shuffled batches, restartable), as a ratio of that rate (target >= 0.70;
  each rate is the best of 3 runs);
- VAE training images/s fed from memory and fed by the loader (ratio ~1.0: not loader-bound);
- MDN-RNN training sequences/s.

    python benchmarks/train.py [--episodes 8] [--steps 20] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.limits import best_of  # noqa: E402
from worldmodels import config  # noqa: E402
from worldmodels.collect import open_rollouts  # noqa: E402
from worldmodels.loader import frame_loader  # noqa: E402
from worldmodels.mdnrnn import MDNRNN, mdn_nll  # noqa: E402
from worldmodels.pipeline import run_stage  # noqa: E402
from worldmodels.rundir import RunDir  # noqa: E402
from worldmodels.device import autocast, select_device  # noqa: E402
from worldmodels.vae import ConvVAE, to_input, vae_loss  # noqa: E402


def raw_decode_fps(store) -> tuple[float, int]:
    frames = store.array("frames")
    chunk, lengths = frames.chunks[0], store.lengths()
    start, n = time.perf_counter(), 0
    for k in np.flatnonzero(lengths > 0):
        first, length = int(k) * store.slot, int(lengths[k])
        for c in range(0, length, chunk):
            n += len(frames[first + c: first + min(c + chunk, length)])
    return n / (time.perf_counter() - start), n


def loader_fps(store, batch: int, frames_total: int, workers: int) -> float:
    loader = frame_loader([store], batch_size=batch, block_units=16, seed=0, workers=workers)
    batches = loader.batches(0)
    next(batches)
    steps = max(1, 3 * frames_total // batch)  # three epochs: steady state, read-ahead amortized
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * batch / (time.perf_counter() - start)


def vae_images_per_s(device, batches, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    model = ConvVAE(32).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        x = to_input(torch.from_numpy(next(batches)).to(device, non_blocking=True))
        with autocast(device):
            recon, mu, logvar = model(x, torch.randn(len(x), 32, device=device))
        loss = vae_loss(x, recon, mu.float(), logvar.float(), 0.5)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()

    return batch * _steps_per_s(step, device, warmup=3, steps=steps)


def mdnrnn_sequences_per_s(device, steps: int, batch: int, seq_len: int) -> float:
    torch.manual_seed(0)
    model = MDNRNN(32, 6, 256, 5).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    z = torch.randn(batch, seq_len + 1, 32, device=device)
    a = torch.randint(0, 6, (batch, seq_len), device=device)

    def step():
        with autocast(device):
            logpi, mu, logsigma, reward, done, _ = model(z[:, :-1], a)
        loss = mdn_nll(z[:, 1:], logpi.float(), mu.float(), logsigma.float()).mean() + reward.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return batch * _steps_per_s(step, device, warmup=2, steps=steps)


def _steps_per_s(step, device, warmup: int, steps: int) -> float:
    """Training steps per second after `warmup` untimed ones (allocator, autotuning, caches)."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - start)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8, help="episodes collected for the loader measurements")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per measurement")
    parser.add_argument("--batch", type=int, default=100, help="VAE batch (frames) and MDN-RNN batch (sequences)")
    parser.add_argument("--seq-len", type=int, default=500, help="MDN-RNN sequence length")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    os.environ["WANDB_MODE"] = "disabled"
    device = select_device(args.device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    spare = max(1, cores - 1)  # every core but the one that trains
    cfg = config.load(ROOT / "configs" / "demo.yaml", [f"collect.episodes={args.episodes}", "logging.wandb=false"])
    results: dict[str, float] = {"cores": cores}
    with tempfile.TemporaryDirectory() as run_dir:
        run_stage("collect", cfg, run_dir)  # as a stage: it writes into a run directory it set up
        store = open_rollouts(cfg, RunDir(run_dir))
        frames = raw_decode_fps(store)[1]
        raw = best_of(3, lambda: raw_decode_fps(store)[0])
        one = best_of(3, lambda: loader_fps(store, args.batch, frames, workers=1))
        results.update(raw_decode_fps=raw, loader_fps=one)
        print(f"raw chunk decode: {raw:9.0f} frames/s (one thread, {frames} frames)")
        print(f"frame loader:     {one:9.0f} frames/s with 1 worker; ratio {one / raw:.2f} of raw decode (target >= 0.70)")
        memory = [np.random.default_rng(0).integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)] * 2
        fed_memory = vae_images_per_s(device, iter(memory * (args.steps + 5)), args.steps, args.batch)
        loader = frame_loader([store], batch_size=args.batch, block_units=16, seed=0, workers=spare)
        batches = (b["frames"] for b in loader.batches(0))
        fed_loader = vae_images_per_s(device, batches, args.steps, args.batch)
        results.update(vae_images_per_s_memory=fed_memory, vae_images_per_s_loader=fed_loader)
        print(f"VAE training on {device}: {fed_memory:8.0f} images/s from memory, {fed_loader:8.0f} fed by the loader "
              f"({spare} worker{'s' if spare > 1 else ''}); ratio {fed_loader / fed_memory:.2f} (1.0: not loader-bound)")
    seqs = mdnrnn_sequences_per_s(device, max(2, args.steps // 4), args.batch, args.seq_len)
    results["mdnrnn_sequences_per_s"] = seqs
    print(f"MDN-RNN training on {device}: {seqs:8.1f} sequences/s of {args.seq_len} steps (batch {args.batch}), "
          f"{seqs * args.seq_len:9.0f} steps/s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
