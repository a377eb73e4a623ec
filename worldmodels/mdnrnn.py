"""M: an LSTM with a mixture density head over the next latent, plus reward and done heads.

Each of the z_size latent dimensions gets its own mixture of `gaussians` 1-D Gaussians (as
the paper); Space Invaders dreams also need the reward and whether the game ends, so two
scalar heads predict them from the same hidden state.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class MDNRNN(nn.Module):
    """Input [z_t, one-hot a_t] -> LSTM -> (log pi, mu, log sigma) of z_{t+1}, reward, done logit."""

    def __init__(self, z_size: int = 32, actions: int = 6, hidden: int = 256, gaussians: int = 5):
        super().__init__()
        self.z_size, self.actions, self.hidden, self.gaussians = z_size, actions, hidden, gaussians
        self.lstm = nn.LSTM(z_size + actions, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 3 * gaussians * z_size + 2)

    def forward(self, z: torch.Tensor, actions: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """z [B, T, z], actions int [B, T] -> (logpi, mu, logsigma) each [B, T, z, K], reward [B, T],
        done logit [B, T], and the LSTM state."""
        x = torch.cat([z, F.one_hot(actions, self.actions).to(z.dtype)], dim=-1)
        h, state = self.lstm(x, state)
        return (*self.split(self.head(h)), state)

    def step(self, z: torch.Tensor, actions: torch.Tensor, state):
        """One step for a batch: z [N, z], actions int [N] -> the outputs of forward for T = 1."""
        logpi, mu, logsigma, reward, done, state = self(z.unsqueeze(1), actions.unsqueeze(1), state)
        return logpi[:, 0], mu[:, 0], logsigma[:, 0], reward[:, 0], done[:, 0], state

    def split(self, out: torch.Tensor):
        B, T = out.shape[:2]
        k, zs = self.gaussians, self.z_size
        mix = out[..., : 3 * k * zs].reshape(B, T, zs, 3, k)
        # Normalized over the K components with K as an outer dimension of a contiguous copy: over
        # a 5-wide innermost dimension PyTorch's CPU kernel goes row by row, 20x slower.
        # (The result is copied back so that reductions over K downstream are not slowed likewise.)
        logpi = F.log_softmax(mix[..., 0, :].transpose(-1, -2).contiguous(), dim=-2).transpose(-1, -2).contiguous()
        return logpi, mix[..., 1, :], mix[..., 2, :], out[..., -2], out[..., -1]


def mdn_nll(z_next: torch.Tensor, logpi: torch.Tensor, mu: torch.Tensor, logsigma: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per latent dimension of z_next [B, T, z] under the mixtures."""
    logsigma = logsigma.clamp(min=-7.0)  # keeps a collapsing component from producing inf
    log_normal = -0.5 * ((z_next.unsqueeze(-1) - mu) / logsigma.exp()).pow(2) - logsigma - LOG_SQRT_2PI
    return -torch.logsumexp(logpi + log_normal, dim=-1)


def sample_next(logpi: torch.Tensor, mu: torch.Tensor, logsigma: torch.Tensor, tau: float,
                gumbel: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Sample z_{t+1} [..., z] from the mixtures at temperature tau (tau > 1: wilder dreams).

    The randomness comes in explicitly (see `draws`): `gumbel` [..., z, K] picks the component
    (Gumbel-max) and `normal` [..., z] draws from it, so callers decide which draws episodes
    share (candidates compared on the same dream share them).
    """
    choice = torch.argmax(logpi / tau + gumbel, dim=-1, keepdim=True)
    m = mu.gather(-1, choice).squeeze(-1)
    s = logsigma.gather(-1, choice).squeeze(-1).exp() * math.sqrt(tau)
    return m + s * normal


def draws(shape_z: tuple[int, ...], gaussians: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gumbel and normal draws sample_next needs for latents of shape `shape_z`.

    Made once per shared draw (e.g. per dream rollout) and then indexed per episode: the logs
    cost more than the rest of the sampling.
    """
    uniform = torch.rand(*shape_z, gaussians, generator=generator)
    return -torch.log(-torch.log(uniform.clamp(1e-20, 1 - 1e-7))), torch.randn(*shape_z, generator=generator)
