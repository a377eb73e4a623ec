import math

import pytest
import torch

from worldmodels.mdnrnn import MDNRNN, mdn_nll, sample_next
from worldmodels.vae import ConvVAE, parameter_count, to_input, vae_loss


def test_vae_has_the_papers_parameter_count_and_shapes():
    vae = ConvVAE(32)
    assert parameter_count(vae) == 4_348_547
    x = torch.rand(5, 3, 64, 64)
    recon, mu, logvar = vae(x, torch.randn(5, 32))
    assert recon.shape == x.shape and mu.shape == logvar.shape == (5, 32)
    assert 0 <= recon.min() and recon.max() <= 1
    assert ConvVAE(64).encode(x)[0].shape == (5, 64)


def test_a_narrower_vae_has_its_channels_in_every_layer_and_the_same_shapes():
    vae = ConvVAE(32, channels=16)
    convs = [m for m in vae.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == [16, 32, 64, 128] and vae.mu.in_features == 512
    assert [m.out_channels for m in vae.decoder if isinstance(m, torch.nn.ConvTranspose2d)] == [64, 32, 16, 3]
    assert parameter_count(vae) == 1_113_443
    x = torch.rand(3, 3, 64, 64)
    recon, mu, _ = vae(x, torch.randn(3, 32))
    assert recon.shape == x.shape and mu.shape == (3, 32)


def test_v_in_int8_encodes_near_float32_and_each_frame_alike_in_any_batch():
    import numpy as np

    from worldmodels import int8

    torch.manual_seed(0)
    vae = ConvVAE(32).eval()
    frames = np.random.default_rng(0).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    ranges = int8.ranges(vae.encoder, frames[:32])
    assert len(ranges) == 4 and ranges == int8.ranges(vae.encoder, frames[:32], batch=5)  # the maxima, in any batches
    quantized = int8.quantized(vae.encoder, ranges)
    x = to_input(torch.from_numpy(frames))
    with torch.no_grad():
        exact, mu = vae.mu(vae.encoder(x)), vae.mu(quantized(x))  # 8 of the frames not calibrated on
        code, rows = quantized(x), torch.cat([quantized(x[i:i + 1]) for i in range(len(x))])
    error = ((mu - exact).pow(2).mean() / exact.var(0).mean()).sqrt()
    assert 0 < error < 0.1, error  # an untrained V on noise; the demo's V on game frames: 0.009
    assert torch.equal(rows, code)  # integer sums: a frame's code does not depend on the frames beside it
    with pytest.raises(ValueError, match="4 ranges >= 0"):
        int8.quantized(vae.encoder, ranges[:3])
    assert int8.spread(np.arange(100), 3) == [0, 50, 99] and int8.spread(np.arange(2), 8) == [0, 1]


def test_vae_loss_sums_pixels_and_floors_kl_at_the_tolerance():
    x = torch.rand(4, 3, 64, 64)
    recon = torch.zeros_like(x)
    mu, logvar = torch.zeros(4, 32), torch.zeros(4, 32)  # exactly the prior: KL 0
    total, rec, kl = vae_loss(x, recon, mu, logvar, kl_tolerance=0.5)
    assert rec.item() == pytest.approx(x.pow(2).sum(dim=(1, 2, 3)).mean().item())
    assert kl.item() == pytest.approx(0.5 * 32)  # floored
    mu = torch.full((4, 32), 3.0)  # KL 0.5 * 9 * 32 = 144 per frame, above the floor
    assert vae_loss(x, recon, mu, logvar, 0.5)[2].item() == pytest.approx(144.0)


def test_to_input_scales_and_transposes_uint8_frames():
    frames = torch.full((2, 64, 64, 3), 255, dtype=torch.uint8)
    frames[..., 0] = 0
    x = to_input(frames)
    assert x.shape == (2, 3, 64, 64) and x[:, 0].max() == 0 and x[:, 1].min() == 1


def test_mdnrnn_shapes_and_mixture_weights():
    m = MDNRNN(z_size=8, actions=6, hidden=16, gaussians=5)
    logpi, mu, logsigma, reward, done, (h, c) = m(torch.randn(3, 7, 8), torch.randint(0, 6, (3, 7)))
    assert logpi.shape == mu.shape == logsigma.shape == (3, 7, 8, 5)
    assert reward.shape == done.shape == (3, 7) and h.shape == (1, 3, 16)
    torch.testing.assert_close(logpi.exp().sum(-1), torch.ones(3, 7, 8))


def test_mdn_nll_equals_the_mixture_density():
    z = torch.tensor([[[0.3]]])
    logpi = torch.log(torch.tensor([[[[0.25, 0.75]]]]))
    mu = torch.tensor([[[[0.0, 1.0]]]])
    logsigma = torch.log(torch.tensor([[[[1.0, 0.5]]]]))
    density = sum(p * math.exp(-0.5 * ((0.3 - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
                  for p, m, s in [(0.25, 0.0, 1.0), (0.75, 1.0, 0.5)])
    assert mdn_nll(z, logpi, mu, logsigma).item() == pytest.approx(-math.log(density), rel=1e-5)


def test_sampling_is_reproducible_for_given_draws_and_sharpens_at_low_temperature():
    from worldmodels.mdnrnn import draws

    logpi = torch.log_softmax(torch.randn(2, 1, 4, 5), -1)
    mu, logsigma = torch.randn(2, 1, 4, 5), torch.full((2, 1, 4, 5), -1.0)
    a = sample_next(logpi, mu, logsigma, 1.15, *draws((2, 1, 4), 5, torch.Generator().manual_seed(3)))
    b = sample_next(logpi, mu, logsigma, 1.15, *draws((2, 1, 4), 5, torch.Generator().manual_seed(3)))
    assert a.shape == (2, 1, 4) and torch.equal(a, b)
    cold = torch.stack([sample_next(logpi, mu, logsigma, 1e-4, *draws((2, 1, 4), 5, torch.Generator().manual_seed(s)))
                        for s in range(50)])
    best = mu.gather(-1, logpi.argmax(-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(cold, best.expand_as(cold), atol=0.05, rtol=0)


class _ModelsOnRows:
    """V's encoder and M's step, with n random frames and LSTM inputs to run them on."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.vae, self.m = ConvVAE(32).eval(), MDNRNN(32, 6, 256, 5).eval()
        self.frames = torch.randint(0, 256, (n, 64, 64, 3), dtype=torch.uint8, generator=g)
        self.x, self.h, self.c = (torch.randn(n, size, generator=g) for size in (38, 256, 256))
        self.g = g

    def code(self, frames):
        return self.vae.encode(to_input(frames))[0]

    def step(self, x, h, c):
        _, (h2, c2) = self.m.lstm(x.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0)))
        return h2[0], c2[0]


def test_a_frames_code_and_a_state_do_not_depend_on_the_batch_they_are_computed_in():
    # CPU kernels are chosen by batch size: without fixed chunks these differ in the last bits
    from worldmodels.device import in_fixed_chunks

    t = _ModelsOnRows(100, 0)
    with torch.no_grad():
        whole, (wh, wc) = in_fixed_chunks(t.code, t.frames), in_fixed_chunks(t.step, t.x, t.h, t.c)
        for size in (1, 7, 25, 64):
            rows = torch.randperm(100, generator=t.g)[:size]
            assert torch.equal(in_fixed_chunks(t.code, t.frames[rows]), whole[rows]), size
            sh, sc = in_fixed_chunks(t.step, t.x[rows], t.h[rows], t.c[rows])
            assert torch.equal(sh, wh[rows]) and torch.equal(sc, wc[rows]), size


def test_rowwise_gives_the_fixed_chunks_bits_for_every_batch_size():
    # it computes whole batches only where the CPU's kernels for that size round as the chunks' do
    from worldmodels.device import _WHOLE, in_fixed_chunks, rowwise

    t = _ModelsOnRows(40, 1)
    with torch.no_grad():
        for n in range(1, 41):
            assert torch.equal(rowwise(t.vae, t.code, t.frames[:n]), in_fixed_chunks(t.code, t.frames[:n])), n
            rows = (t.x[:n], t.h[:n], t.c[:n])
            for got, want in zip(rowwise(t.m, t.step, *rows), in_fixed_chunks(t.step, *rows)):
                assert torch.equal(got, want), n
    assert len(_WHOLE[t.vae]) == 40 and len(_WHOLE[t.m]) == 40  # one probe per shape, kept with the model


def test_v_means_give_the_fixed_chunks_bits_for_every_batch_size_in_float32_and_int8():
    # vae.means runs the convolutions and the dense layer whole apart: the int8 ones at every size
    import copy

    from worldmodels import int8
    from worldmodels.device import _WHOLE, in_fixed_chunks
    from worldmodels.vae import means

    t = _ModelsOnRows(40, 2)
    quantized = copy.deepcopy(t.vae)
    quantized.encoder = int8.quantized(t.vae.encoder, int8.ranges(t.vae.encoder, t.frames.numpy()))
    with torch.no_grad():
        for vae in (t.vae, quantized):
            for n in range(1, 41):
                want = in_fixed_chunks(lambda f: vae.encode(to_input(f))[0], t.frames[:n])
                assert torch.equal(means(vae, t.frames[:n]), want), n
    assert all(_WHOLE[quantized.encoder].values()) and len(_WHOLE[quantized.encoder]) == 40
