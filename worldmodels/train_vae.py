"""The train-vae stage: fit V to the collected frames, then leave reconstructions in report/."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from worldmodels import seeds
from worldmodels.config import Config
from worldmodels.dataset import EpisodeStore
from worldmodels.loader import frame_loader
from worldmodels.rundir import RunDir
from worldmodels.tracking import log
from worldmodels.device import autocast, select_device
from worldmodels.training import Fit, fit
from worldmodels.vae import ConvVAE, parameter_count, to_input, vae_loss

STAGE = "train-vae"


def build_vae(cfg: Config, device: torch.device) -> ConvVAE:
    torch.manual_seed(seeds.seed(cfg, "vae.init"))
    model = ConvVAE(cfg.vae.z_size, cfg.vae.channels).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def compiled(model: ConvVAE, cfg: Config, device: torch.device, backend: str | Callable = "inductor") -> torch.nn.Module:
    """torch.compile(model), or `model` itself with a warning where the compiler fails on V.

    The compiler's failures show at the first forward or backward pass, which would end the stage
    at step 0 with the compiler's trace, after the job waited in a queue. With torch 2.11 on CUDA
    it fails on V's decoder: inductor expects contiguous weight gradients for the transposed
    convolution fed a 1x1 image, and CUDA returns channels-last ones (pytorch/pytorch#171622). So
    the compiled model is tried once here, forwards and backwards on a batch of zeros; the
    gradients it leaves are cleared. `vae.compile` changes where and how fast V trains (and the
    last bits of its arithmetic), not what it is trained on. `backend`: torch.compile's.
    """
    forward = torch.compile(model, backend=backend)
    x = torch.zeros(cfg.vae.batch_size, 3, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    try:
        with autocast(device):
            recon, mu, logvar = forward(x, torch.zeros(cfg.vae.batch_size, cfg.vae.z_size, device=device))
        (recon.float().mean() + mu.float().mean() + logvar.float().mean()).backward()
    except (torch.OutOfMemoryError, torch.AcceleratorError):  # the device's failures, which eager V meets too
        raise
    except Exception as exc:  # the compiler raises many types (AssertionError above), all of them its own failure
        cause = getattr(exc, "inner_exception", None) or exc  # what the backend raised, where dynamo wraps it
        log.warning("train-vae: vae.compile: torch.compile fails on V with torch %s (%s: %s); training V uncompiled",
                    torch.__version__, type(cause).__name__, str(cause).partition("\n")[0])
        forward = model
    finally:
        model.zero_grad(set_to_none=True)
    return forward


def mean_colour(store: EpisodeStore) -> torch.Tensor:
    """Mean RGB in [0, 1] of the first committed episode's frames (deterministic, cheap)."""
    frames = store.read_episode(int(store.complete()[0]), ["frames"])["frames"]
    return torch.from_numpy(frames.reshape(-1, 3).mean(axis=0) / 255.0)


def int8_ranges(model: ConvVAE, stores: list[EpisodeStore]) -> dict[str, list[float]]:
    """V's int8 calibration (worldmodels.int8), from frames of episodes spread over all its data."""
    from worldmodels import int8

    episodes = [(store, k) for store in stores for k in store.complete()]
    picked = [episodes[i] for i in int8.spread(np.arange(len(episodes)))]
    frames = np.concatenate([store.read_episode(int(k), ["frames"])["frames"] for store, k in picked])
    return {"int8_ranges": int8.ranges(model.encoder, frames)}


def train_vae(cfg: Config, run_dir: str | Path) -> str:
    """Train the VAE to cfg.vae.steps (resuming if checkpoints exist); returns a line for people."""
    from worldmodels.rounds import continued_checkpoint, rollouts

    run = RunDir(run_dir)
    stores = rollouts(run, cfg)  # round k of iterative training trains on rounds 0..k
    store = stores[-1]
    device = select_device(cfg.train.device)
    model = build_vae(cfg, device)
    model.init_output(mean_colour(stores[0]).to(device))  # a resumed run (or a later round) loads its weights over this
    log.info("train-vae: ConvVAE with %s parameters (z=%d, %d channels) on %s", f"{parameter_count(model):,}", cfg.vae.z_size,
             cfg.vae.channels, device)
    forward = compiled(model, cfg, device) if cfg.vae.compile and device.type == "cuda" else model
    loader = frame_loader(stores, batch_size=cfg.vae.batch_size, block_units=cfg.vae.block_chunks,
                          seed=seeds.seed(cfg, "vae.batches"), workers=cfg.vae.loader_workers)

    def loss(batch: dict[str, np.ndarray]):
        x = to_input(torch.from_numpy(batch["frames"]).to(device, non_blocking=True))
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        noise = torch.randn(x.shape[0], cfg.vae.z_size, device=device)
        with autocast(device):
            recon, mu, logvar = forward(x, noise)
        total, recon_loss, kl_loss = vae_loss(x, recon, mu.float(), logvar.float(), cfg.vae.kl_tolerance)
        return total, {"recon": recon_loss.detach(), "kl": kl_loss.detach()}

    def pictures() -> list[Path]:
        from worldmodels.plots import plot_losses, plot_reconstructions

        return [plot_losses(run, STAGE), plot_reconstructions(run, model.cpu().eval(), store)]

    job = Fit(STAGE, model, torch.optim.Adam(model.parameters(), lr=cfg.vae.lr), loader.batches, loss,
              total_steps=cfg.vae.steps, extra_state={"z_size": cfg.vae.z_size, "channels": cfg.vae.channels}, pictures=pictures,
              init=continued_checkpoint(run, cfg, STAGE), finish=lambda: int8_ranges(model, stores))
    return f"train-vae: finished at step {fit(cfg, run, job)}"
