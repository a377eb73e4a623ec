"""The CUDA path: bf16 autocast steps run, losses are finite, and GPU agrees with CPU.

Marked `gpu`; skipped where no CUDA device is present (CI machines have none).
"""

import copy

import pytest
import torch

from worldmodels.mdnrnn import MDNRNN, mdn_nll
from worldmodels.training import autocast
from worldmodels.vae import ConvVAE, vae_loss

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
CUDA = torch.device("cuda")


def test_vae_bf16_channels_last_training_step_is_finite_and_learns():
    torch.manual_seed(0)
    model = ConvVAE(32).to(CUDA, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(64, 3, 64, 64, device=CUDA).contiguous(memory_format=torch.channels_last)
    losses = []
    for _ in range(20):
        with autocast(CUDA):
            recon, mu, logvar = model(x, torch.randn(64, 32, device=CUDA))
        loss = vae_loss(x, recon, mu.float(), logvar.float(), 0.5)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_vae_forward_agrees_between_cpu_fp32_and_gpu_bf16():
    torch.manual_seed(0)
    cpu = ConvVAE(32).eval()
    gpu = copy.deepcopy(cpu).to(CUDA)
    x, noise = torch.rand(16, 3, 64, 64), torch.zeros(16, 32)
    with torch.no_grad():
        ref = cpu(x, noise)[0]
        with autocast(CUDA):
            out = gpu(x.to(CUDA), noise.to(CUDA))[0].float().cpu()
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=0)


def test_mdnrnn_bf16_step_is_finite_and_agrees_with_cpu():
    torch.manual_seed(0)
    cpu = MDNRNN(32, 6, 256, 5)
    gpu = copy.deepcopy(cpu).to(CUDA)
    z, a = torch.randn(8, 50, 32), torch.randint(0, 6, (8, 50))
    with torch.no_grad():
        ref = mdn_nll(z[:, 1:], *cpu(z[:, :-1], a[:, :-1])[:3]).mean()
        with autocast(CUDA):
            logpi, mu, logsigma = gpu(z[:, :-1].to(CUDA), a[:, :-1].to(CUDA))[:3]
        out = mdn_nll(z[:, 1:].to(CUDA), logpi.float(), mu.float(), logsigma.float()).mean().cpu()
    assert torch.isfinite(out)
    torch.testing.assert_close(out, ref, atol=5e-2, rtol=1e-2)
