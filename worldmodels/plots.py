"""Pictures a person wants to look at, written under RUN_DIR/report/ (matplotlib, no display)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from worldmodels.files import atomic_write
from worldmodels.rundir import RunDir


def figure(**kwargs):
    """A matplotlib Figure of its own, drawn without pyplot: no display and no global state to close
    (pyplot's import, spared, was only 0.1 to 0.3 s of a stage process here)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def plot_losses(run: RunDir, stage: str) -> Path:
    """report/STAGE-loss.png: every logged loss term of a training stage against the step."""
    from worldmodels.training import MetricsLog

    records = MetricsLog.read(run.metrics_log(stage))
    keys = [k for k in records[0] if k not in ("step", "grad_norm")] if records else []
    fig = figure(figsize=(4 * max(len(keys), 1), 3))
    axes = fig.subplots(1, max(len(keys), 1), squeeze=False)
    steps = [r["step"] for r in records]
    for ax, key in zip(axes[0], keys):
        ax.plot(steps, [r[key] for r in records])
        ax.set_title(f"{stage} {key}")
        ax.set_xlabel("step")
    fig.tight_layout()
    return _save(fig, run, f"{stage}-loss.png")


def image_grid(rows: list[np.ndarray]) -> np.ndarray:
    """Stack rows of uint8 frames [N, H, W, 3] into one picture with 2-pixel gaps."""
    h, w = rows[0].shape[1:3]
    n = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + 2), n * (w + 2), 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, frame in enumerate(row):
            out[i * (h + 2): i * (h + 2) + h, j * (w + 2): j * (w + 2) + w] = frame
    return out


def save_image(run: RunDir, name: str, image: np.ndarray, title: str) -> Path:
    fig = figure(figsize=(image.shape[1] / 50, image.shape[0] / 50 + 0.4))
    ax = fig.subplots()
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return _save(fig, run, name)


def plot_reconstructions(run: RunDir, vae, store, count: int = 8) -> Path:
    """report/vae-reconstructions.png: frames from several episodes (top) and V's reconstructions."""
    import torch

    from worldmodels.vae import to_input

    episodes = store.complete()
    frames = []
    for i in range(count):
        k = int(episodes[i % len(episodes)])
        ep = store.read_episode(k, ["frames"])["frames"]
        frames.append(ep[(i * 37) % len(ep)])
    frames = np.stack(frames)
    with torch.no_grad():
        mu, _ = vae.encode(to_input(torch.from_numpy(frames)))
        recon = (vae.decode(mu).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return save_image(run, "vae-reconstructions.png", image_grid([frames, recon]),
                      "frames (top) and VAE reconstructions (bottom)")


def _save(fig, run: RunDir, name: str) -> Path:
    return save_figure(fig, run.report_dir / name)


def save_figure(fig, path: Path) -> Path:
    """Save as a PNG atomically: a kill mid-write, or two evaluate tasks finishing together,
    never leave a torn image."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    atomic_write(path, png.getvalue())
    return path


def plot_dreams(cfg, run: RunDir, mdnrnn, latents, count: int = 4, steps: int = 12) -> Path:
    """report/mdnrnn-dreams.png: per row, real frames decoded by V (odd rows) and the frames M
    dreams from the same start and actions at temperature mdnrnn.tau (even rows)."""
    import torch

    from worldmodels import seeds
    from worldmodels.mdnrnn import draws, sample_next

    vae = run.load_vae(cfg)
    generator = torch.Generator().manual_seed(seeds.seed(cfg, "mdnrnn.dreams"))
    rows = []
    episodes = latents.complete()
    with torch.no_grad():
        for i in range(count):
            ep = latents.read_episode(int(episodes[i % len(episodes)]), ["mu", "actions"])
            n = min(steps, len(ep["mu"]) - 1)
            real = torch.from_numpy(ep["mu"][: n + 1])
            actions = torch.from_numpy(ep["actions"][1: n + 1]).long()
            z, state, dream = real[:1].unsqueeze(0), None, [real[0]]
            for t in range(n):
                logpi, mu, logsigma, _, _, state = mdnrnn(z, actions[t].view(1, 1), state)
                z = sample_next(logpi, mu, logsigma, cfg.mdnrnn.tau, *draws(z.shape, mdnrnn.gaussians, generator))
                dream.append(z[0, 0])
            for zs in (real, torch.stack(dream)):
                rows.append((vae.decode(zs).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    return save_image(run, "mdnrnn-dreams.png", image_grid(rows),
                      f"V's decoding of real latents (odd rows) and M's dream from the same start (even rows), tau={cfg.mdnrnn.tau}")


def plot_fitness(run: RunDir, history: list[dict], games: str) -> Path:
    """report/controller-fitness.png: best, mean and worst fitness of each CMA-ES generation in the
    `games` they were played in (and, with controller.select, the re-scored mean of the candidate
    that plays)."""
    fig = figure(figsize=(6, 3.5))
    ax = fig.subplots()
    gens = [h["generation"] for h in history]
    for key in ("best", "mean", "worst"):
        ax.plot(gens, [h[key] for h in history], label=key)
    rescored = [(h["generation"], h["mean_rescored"]) for h in history if "mean_rescored" in h]
    if rescored:
        ax.plot(*zip(*rescored), "o", label="CMA-ES mean, re-scored in the game")
    selected = [(h["generation"], h["selected_rescored"]) for h in history if "selected_rescored" in h]
    if selected:
        ax.plot(*zip(*selected), "*", markersize=10, label="the selected candidate, re-scored")
    ax.set_xlabel("generation")
    ax.set_ylabel(f"mean return over rollouts\n({games})", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, run, "controller-fitness.png")


def plot_scores(run: RunDir, results: dict) -> Path:
    """report/eval-scores.png: every episode's score per policy and protocol (dots, the mean as a
    bar), with the published random, human and DQN scores as lines to read them against."""
    from worldmodels.reference import PUBLISHED, PUBLISHED_SOURCE
    from worldmodels.scores import blocks, policy_scores

    series = {f"{name}, {protocol}": scores for protocol, block in blocks(results).items()
              for name, scores in policy_scores(block).items()}
    fig = figure(figsize=(8, 0.6 * len(series) + 1.6))
    ax = fig.subplots()
    jitter = np.random.default_rng(0)  # fixed: the same results draw the same picture
    for row, (name, values) in enumerate(reversed(series.items())):
        y = row + jitter.uniform(-0.18, 0.18, len(values))
        ax.plot(values, y, "o", alpha=0.35, markersize=4, color=f"C{len(series) - 1 - row}")
        ax.plot([np.mean(values)] * 2, [row - 0.32, row + 0.32], color="black", linewidth=2)
        ax.annotate(f"{np.mean(values):.0f}", (np.mean(values), row + 0.34), ha="center", fontsize=7)
    for score in PUBLISHED.values():
        ax.axvline(score, color="grey", linestyle=":", linewidth=1)
    # the published scores are named on a top axis of their own, clear of the dots
    top = ax.secondary_xaxis("top")
    top.set_xticks(list(PUBLISHED.values()), [f"{name} {score:g}" for name, score in PUBLISHED.items()],
                   fontsize=7, color="dimgrey")
    top.set_xlabel("published: " + PUBLISHED_SOURCE, fontsize=7, color="dimgrey")
    ax.set_yticks(range(len(series)), list(reversed(series)))
    ax.set_ylim(-0.6, len(series) - 0.4)
    ax.set_xlim(0, max(max(PUBLISHED.values()), *(max(v) for v in series.values())) * 1.04)
    ax.set_xlabel(f"episode score ({results['episodes']} episodes, the same for every policy; bar: mean)")
    fig.tight_layout()
    return _save(fig, run, "eval-scores.png")
