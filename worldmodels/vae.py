"""V: the paper's convolutional VAE on 64x64 RGB frames (4,348,547 parameters at z=32)."""

from __future__ import annotations

import torch
from torch import nn


class ConvVAE(nn.Module):
    """Encoder: 4 convs (k4, s2; 32/64/128/256) to mu/logvar; decoder: dense to 1024 and 4 deconvs.

    Frames enter as float [B, 3, 64, 64] in [0, 1]; reconstructions leave the same way (sigmoid).
    """

    def __init__(self, z_size: int = 32):
        super().__init__()
        self.z_size = z_size
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 128, 4, stride=2), nn.ReLU(),
            nn.Conv2d(128, 256, 4, stride=2), nn.ReLU(),
            nn.Flatten(),
        )
        self.mu = nn.Linear(1024, z_size)
        self.logvar = nn.Linear(1024, z_size)
        self.expand = nn.Linear(z_size, 1024)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(1024, 128, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 6, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(32, 3, 6, stride=2), nn.Sigmoid(),
        )

    def init_output(self, mean_colour: torch.Tensor) -> None:
        """Start the decoder's output at the frames' mean colour (RGB in [0, 1]).

        Atari frames are mostly black. From the default start (sigmoid(0): mid-grey everywhere)
        the first thousand steps go to learning the background, and meanwhile the encoder
        settles on one constant code that it does not leave (posterior collapse: z says nothing
        about the frame). Starting from the mean colour, it encodes the sprites within a few
        hundred steps.
        """
        p = mean_colour.float().clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            self.decoder[-2].bias.copy_(torch.log(p / (1 - p)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu, logvar [B, z] of frames [B, 3, 64, 64] in [0, 1]."""
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Frames [B, 3, 64, 64] in [0, 1] from latents [B, z]."""
        return self.decoder(self.expand(z).view(-1, 1024, 1, 1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, mu, logvar; `noise` ~ N(0, 1) [B, z] is passed in to keep sampling explicit."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mu, logvar


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             kl_tolerance: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Total, reconstruction and KL loss, as the paper: summed squared error per frame and KL
    per frame floored at kl_tolerance * z_size (so the VAE is free to use that many nats), then
    averaged over the batch."""
    recon_loss = (recon.float() - x.float()).pow(2).sum(dim=(1, 2, 3)).mean()
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
    kl_loss = torch.clamp(kl, min=kl_tolerance * mu.shape[1]).mean()
    return recon_loss + kl_loss, recon_loss, kl_loss


def to_input(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames [B, 64, 64, 3] to the VAE's float input [B, 3, 64, 64] in [0, 1]."""
    return frames.permute(0, 3, 1, 2).float().div_(255.0)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
