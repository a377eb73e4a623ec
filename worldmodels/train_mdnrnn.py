"""The train-mdnrnn stage: fit M to latent sequences, then leave dreams in report/.

Each step re-samples z = mu + sigma * eps from the stored (mu, logvar), as the paper, and
trains with teacher forcing: from (z_t, a_t) predict z_{t+1}, the reward and game over.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from worldmodels import seeds
from worldmodels.config import Config
from worldmodels.loader import sequence_loader
from worldmodels.mdnrnn import MDNRNN, mdn_nll
from worldmodels.rundir import RunDir
from worldmodels.tracking import log
from worldmodels.device import autocast, select_device
from worldmodels.training import Fit, fit
from worldmodels.vae import parameter_count

STAGE = "train-mdnrnn"


def build_mdnrnn(cfg: Config, actions: int, device: torch.device) -> MDNRNN:
    torch.manual_seed(seeds.seed(cfg, "mdnrnn.init"))
    return MDNRNN(cfg.vae.z_size, actions, cfg.mdnrnn.hidden, cfg.mdnrnn.gaussians).to(device)


def train_mdnrnn(cfg: Config, run_dir: str | Path) -> str:
    """Train the MDN-RNN to cfg.mdnrnn.steps (resuming if checkpoints exist); returns a line for people."""
    from worldmodels.envs import AtariEnv
    from worldmodels.rounds import continued_checkpoint

    run = RunDir(run_dir)
    store = run.finished_latents(cfg)
    run.vae_checkpoint(cfg)  # M's report decodes its dreams with V: refuse now, not after training
    device = select_device(cfg.train.device)
    actions = AtariEnv(cfg.env).num_actions
    model = build_mdnrnn(cfg, actions, device)
    m = cfg.mdnrnn
    log.info("train-mdnrnn: MDN-RNN with %s parameters (LSTM %d, %d Gaussians) on %s",
             f"{parameter_count(model):,}", m.hidden, m.gaussians, device)
    loader = sequence_loader(store, seq_len=m.seq_len, batch_size=m.batch_size, block_units=m.block_episodes,
                             seed=seeds.seed(cfg, "mdnrnn.batches"), workers=m.loader_workers)

    def loss(batch: dict[str, np.ndarray]):
        b = {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.items()}
        z = b["mu"] + torch.exp(0.5 * b["logvar"]) * torch.randn(b["mu"].shape, device=device)
        mask = b["mask"].float()
        with autocast(device):
            logpi, mu, logsigma, reward, done, _ = model(z[:, :-1], b["actions"][:, 1:])
        nll = (mdn_nll(z[:, 1:], logpi.float(), mu.float(), logsigma.float()).mean(-1) * mask).sum() / mask.sum()
        reward_loss = ((reward.float() - b["rewards"][:, 1:] * m.reward_scale).pow(2) * mask).sum() / mask.sum()
        done_target = b["terminated"][:, 1:].float()
        done_loss = (F.binary_cross_entropy_with_logits(done.float(), done_target, reduction="none",
                                                        pos_weight=torch.tensor(m.done_weight, device=device)) * mask).sum() / mask.sum()
        return nll + reward_loss + done_loss, {"nll": nll.detach(), "reward": reward_loss.detach(), "done": done_loss.detach()}

    def pictures() -> list[Path]:
        from worldmodels.plots import plot_dreams, plot_losses

        return [plot_losses(run, STAGE), plot_dreams(cfg, run, model.cpu().eval(), store)]

    job = Fit(STAGE, model, torch.optim.Adam(model.parameters(), lr=m.lr), loader.batches, loss, total_steps=m.steps,
              grad_clip=m.grad_clip, extra_state={"z_size": cfg.vae.z_size, "actions": actions}, pictures=pictures,
              init=continued_checkpoint(run, cfg, STAGE))
    return f"train-mdnrnn: finished at step {fit(cfg, run, job)}"
