"""The CUDA path: bf16 autocast steps run, losses are finite, and GPU agrees with CPU.

Marked `gpu`; skipped where no CUDA device is present (CI machines have none).
"""

import copy
import json

import numpy as np
import pytest
import torch

from worldmodels.mdnrnn import MDNRNN, mdn_nll
from worldmodels.device import autocast
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


def test_dream_on_the_gpu_runs_the_population_as_one_batch_with_the_cpu_draws():
    import numpy as np

    from worldmodels.config import Config, ControllerConfig
    from worldmodels.controller import controller_size
    from worldmodels.evolution import dream_returns

    torch.manual_seed(0)
    cpu = MDNRNN(32, 6, 256, 5).eval()
    gpu = copy.deepcopy(cpu).to(CUDA)
    cfg = Config(controller=ControllerConfig(rollouts=4, dream_steps=30))
    starts = np.random.default_rng(0).normal(0, 1, (8, 2, 32)).astype(np.float32)
    params = np.random.default_rng(1).normal(0, 0.1, (6, controller_size(32, 256, 6)))
    jobs = [(p, r) for p in range(6) for r in range(4)]
    out = dream_returns(cfg, gpu, starts, params, jobs, generation=3)
    assert out.shape == (24,) and np.isfinite(out).all()
    np.testing.assert_array_equal(out, dream_returns(cfg, gpu, starts, params, jobs, generation=3))
    assert dream_returns(cfg, cpu, starts, params, jobs, generation=3).shape == out.shape


def test_world_model_policy_plays_on_the_gpu():
    import numpy as np

    from worldmodels.controller import WorldModelPolicy, controller_size
    from worldmodels.rollout import Episode

    torch.manual_seed(0)
    vae, mdnrnn = ConvVAE(32).to(CUDA, memory_format=torch.channels_last).eval(), MDNRNN(32, 6, 256, 5).to(CUDA).eval()
    policy = WorldModelPolicy(vae, mdnrnn, torch.randn(2, controller_size(32, 256, 6)) * 0.1, batch=3)
    for slot in range(3):
        policy.begin(slot, Episode(slot, slot, np.random.default_rng(slot), tag=slot % 2))
    obs = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    actions = policy.act(obs, np.arange(3))
    assert actions.shape == (3,) and actions.dtype == np.int64 and ((0 <= actions) & (actions < 6)).all()
    assert policy.h.device.type == "cuda" and policy.h.abs().sum() > 0


def test_vae_compile_trains_compiled_or_falls_back_to_eager_with_one_warning(caplog):
    from worldmodels.config import Config, VAEConfig
    from worldmodels.train_vae import compiled

    torch.manual_seed(0)
    cfg = Config(vae=VAEConfig(batch_size=16, compile=True))
    model = ConvVAE(32).to(CUDA, memory_format=torch.channels_last)
    try:
        forward = compiled(model, cfg, CUDA)
        assert all(p.grad is None for p in model.parameters())  # the trial leaves nothing behind
        fell_back = [r for r in caplog.records if "vae.compile" in r.getMessage()]
        assert (forward is model) == bool(fell_back) and len(fell_back) <= 1
        x = torch.rand(16, 3, 64, 64, device=CUDA).contiguous(memory_format=torch.channels_last)
        with autocast(CUDA):
            recon, mu, logvar = forward(x, torch.randn(16, 32, device=CUDA))
        loss = vae_loss(x, recon, mu.float(), logvar.float(), 0.5)[0]
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    finally:
        torch._dynamo.reset()


def test_the_pipeline_runs_on_the_gpu_with_c_found_in_the_dream(tmp_path):
    from conftest import SMOKE, run_cli

    from worldmodels.stages import STAGES

    run = tmp_path / "run"
    args = ["--config", SMOKE, "--run-dir", run, "train.device=cuda", "vae.compile=true", "controller.mode=dream",
            "controller.rescore_every=0", "evaluate.videos=0"]
    for stage in STAGES:
        if stage != "report":
            run_cli(stage, *args)
    status = json.loads(run_cli("status", "--json", run).stdout)
    assert all(s["state"] == "done" for name, s in status["stages"].items() if name != "report"), status
    results = json.loads((run / "eval" / "results.json").read_text())
    assert np.isfinite(results["mean"])
