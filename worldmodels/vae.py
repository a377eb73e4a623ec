"""V: the paper's convolutional VAE on 64x64 RGB frames (4,348,547 parameters at z=32), and narrower ones."""

from __future__ import annotations

import torch
from torch import nn


class ConvVAE(nn.Module):
    """Encoder: 4 convs (k4, s2; c/2c/4c/8c channels) to mu/logvar; decoder: dense to 32c and 4 deconvs.

    The paper's V has c = 32 (`channels`): 32/64/128/256 channels and a code of 1024. With c = 16
    the encoder does a quarter of the multiply-adds (3.7M a frame against 14.7M), which is most
    of what a real-game step costs on a CPU besides the emulator.
    Frames enter as float [B, 3, 64, 64] in [0, 1]; reconstructions leave the same way (sigmoid).
    """

    def __init__(self, z_size: int = 32, channels: int = 32):
        super().__init__()
        self.z_size, self.channels = z_size, channels
        c, code = channels, 32 * channels  # the last conv's 8c channels on a 2x2 grid
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c, 4, stride=2), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2), nn.ReLU(),
            nn.Conv2d(2 * c, 4 * c, 4, stride=2), nn.ReLU(),
            nn.Conv2d(4 * c, 8 * c, 4, stride=2), nn.ReLU(),
            nn.Flatten(),
        )
        self.mu = nn.Linear(code, z_size)
        self.logvar = nn.Linear(code, z_size)
        self.expand = nn.Linear(z_size, code)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(code, 4 * c, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(4 * c, 2 * c, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(2 * c, c, 6, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(c, 3, 6, stride=2), nn.Sigmoid(),
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
        return self.decoder(self.expand(z).view(-1, self.expand.out_features, 1, 1))

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


def means(vae: ConvVAE, frames: torch.Tensor) -> torch.Tensor:
    """V's mean z [B, z] of uint8 frames [B, 64, 64, 3], each row's bits those of
    worldmodels.device.in_fixed_chunks whatever the batch (see rowwise).

    The convolutions and the dense layer on top go through rowwise apart, so each runs whole at
    every batch size whose kernels round as the chunks' do. The dense layer's kernels do not at
    most sizes, and when it went through rowwise with the convolutions, it sent them into chunks
    too; yet the convolutions are 98% of the work, and int8 ones (integer sums) run whole at every
    size, at half the cost a frame (50 us against 106 in chunks, a batch of 32 on AVX-512 VNNI).
    Within a chunk a row's result depends on that row alone, so the two steps give the chunks' bits."""
    from worldmodels.device import rowwise

    code = rowwise(vae.encoder, lambda f: vae.encoder(to_input(f)), frames)
    return rowwise(vae.mu, lambda h: vae.mu(h), code)


def to_input(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames [B, 64, 64, 3] to the VAE's float input [B, 3, 64, 64] in [0, 1]."""
    return frames.permute(0, 3, 1, 2).float().div_(255.0)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
