"""Controller training speed against its limits, measured in one run.

Prints
- real-game evaluation steps/s on one core (V encodes, C acts, M updates h, batched over
  episodes) against the raw emulator's steps/s (frame_skip x act + screen grab): target >= 0.70;
  and the bound V's encoder alone puts on that ratio on this core;
- dream steps/s for a whole population batched together against a per-candidate loop: target
  >= 5x on CPU (>= 50x on a GPU);
- the baselines' evaluation steps/s (they play blind: no screen grabbed or resized) against
  the emulator's steps/s without screen grabs, and the same policies told to look;
- the master's share of a generation (CMA-ES ask + tell + the per-generation checkpoint) at the
  paper's scale (1,734 parameters, population 64, 16 rollouts), with the generation's play time
  taken from the measured evaluation rate on the given number of ranks: target <= 2%.

    python benchmarks/controller.py [--seconds 3] [--repeats 3] [--ranks 64] [--device cpu] [--channels 32]
                                    [--precision float32]

--channels sets V's width (vae.channels): 32 is the paper's V (and the demo's); 16 does a quarter of its
encoder's multiply-adds. --precision int8 plays V's encoder in int8 (vae.precision; CPU only).

Each rate is the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.limits import best_of, pin_to_one_core, raw_emulator_fps  # noqa: E402
from worldmodels.config import EnvConfig  # noqa: E402
from worldmodels.controller import WorldModelPolicy, controller_size  # noqa: E402
from worldmodels.evolution import es_bytes  # noqa: E402
from worldmodels.mdnrnn import MDNRNN  # noqa: E402
from worldmodels.device import select_device  # noqa: E402
from worldmodels.vae import ConvVAE  # noqa: E402

Z, H, A = 32, 256, 6


def world_model(device: torch.device, channels: int = 32, precision: str = "float32"):
    """V (of `channels`, its encoder in `precision`) and M with the paper's sizes on `device`, as
    worldmodels.rundir.vae_from gives them (V channels-last; in int8, calibrated on noise)."""
    from worldmodels import int8

    torch.manual_seed(0)
    vae = ConvVAE(Z, channels).to(device, memory_format=torch.channels_last).eval()
    if precision == "int8":
        noise = np.random.default_rng(0).integers(0, 256, (256, 64, 64, 3), dtype=np.uint8)
        vae.encoder = int8.quantized(vae.encoder, int8.ranges(vae.encoder, noise))
    return vae, MDNRNN(Z, A, H, 5).to(device).eval()


def encoder_seconds_per_frame(device: torch.device, batch: int, repeats: int = 20, channels: int = 32,
                              precision: str = "float32") -> float:
    """V's encoder alone on a batch of frames (from host memory, as in play): the part of a
    real-game step that no wrapper can save."""
    from worldmodels.vae import to_input

    vae = world_model(device, channels, precision)[0]
    frames = torch.randint(0, 256, (batch, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        vae.encode(to_input(frames.to(device)))[0].cpu()
        start = time.perf_counter()
        for _ in range(repeats):
            vae.encode(to_input(frames.to(device)))[0].cpu()
    return (time.perf_counter() - start) / (repeats * batch)


def real_game_steps_per_s(device: torch.device, seconds: float, batch: int, channels: int = 32,
                          precision: str = "float32") -> float:
    from worldmodels.rollout import Episode, play

    vae, mdnrnn = world_model(device, channels, precision)
    params = torch.randn(batch, controller_size(Z, H, A)) * 0.1
    policy = WorldModelPolicy(vae, mdnrnn, params, batch)
    from worldmodels.envs import AtariEnv

    envs = [AtariEnv(EnvConfig()) for _ in range(batch)]  # made before the clock starts
    deadline = _Deadline(seconds)

    def jobs():
        k = 0
        while True:
            yield Episode(k, k, np.random.default_rng(k), tag=k % batch)
            k += 1

    counted = _CountingPolicy(policy)
    try:
        with torch.no_grad():
            play(EnvConfig(), counted, jobs(), lambda played: None, batch=batch, stop=deadline, envs=envs)
    except TimeoutError:
        pass
    return counted.steps / deadline.elapsed()


class _Deadline:
    """A `stop` for play that ends a timed run (TimeoutError) once `seconds` have passed."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def check(self) -> None:
        if self.elapsed() > self.seconds:
            raise TimeoutError


class _CountingPolicy:
    """Counts every environment step, also those of episodes still running at the end."""

    def __init__(self, policy, blind: bool = False):
        self.policy, self.steps, self.blind = policy, 0, blind

    def begin(self, slot, job):
        self.policy.begin(slot, job)

    def end(self, slot, played):
        self.policy.end(slot, played)

    def act(self, obs, slots):
        self.steps += len(slots)
        return self.policy.act(obs, slots)


def baseline_steps_per_s(seconds: float, batch: int, look: bool) -> float:
    """Evaluation steps/s of the random policy and always FIRE in turn (blind, or told to look)."""
    from worldmodels.envs import EnvPool
    from worldmodels.policies import RandomRepeatPolicy, ScriptedPolicy
    from worldmodels.rollout import Episode, play

    envs = EnvPool(EnvConfig()).take(batch)  # made before the clock starts
    policies = [RandomRepeatPolicy(envs[0].num_actions, 1, batch), ScriptedPolicy("always_fire", envs[0].action_names, batch)]
    deadline = _Deadline(seconds)
    counted = [_CountingPolicy(p, blind=not look) for p in policies]
    try:
        for k in itertools.count():  # batches of fresh episodes, the two policies in turn, until the deadline
            jobs = (Episode(j, j, np.random.default_rng(j)) for j in range(k * batch, (k + 1) * batch))
            play(EnvConfig(), counted[k % 2], jobs, lambda played: None, batch=batch, stop=deadline, envs=envs)
    except TimeoutError:
        pass
    return sum(c.steps for c in counted) / deadline.elapsed()


def dream_speedup(device: torch.device, population: int, rollouts: int, steps: int) -> tuple[float, float]:
    """Dream steps/s of the batched population and of a loop over candidates."""
    from worldmodels.config import Config, ControllerConfig, MDNRNNConfig
    from worldmodels.evolution import dream_returns

    torch.manual_seed(0)
    mdnrnn = MDNRNN(Z, A, H, 5).to(device).eval()
    cfg = Config(controller=ControllerConfig(rollouts=rollouts, dream_steps=steps), mdnrnn=MDNRNNConfig())
    # a done head that never fires keeps every dream the full length: a fair count of steps
    with torch.no_grad():
        mdnrnn.head.bias[-1] = -1e4
    starts = np.zeros((8, 2, Z), np.float32)
    params = np.random.default_rng(0).normal(0, 0.1, (population, controller_size(Z, H, A)))
    jobs = [(p, r) for p in range(population) for r in range(rollouts)]
    start = time.perf_counter()
    dream_returns(cfg, mdnrnn, starts, params, jobs, 0)
    batched = len(jobs) * steps / (time.perf_counter() - start)
    start = time.perf_counter()
    for p in range(population):
        dream_returns(cfg, mdnrnn, starts, params, [(p, r) for r in range(rollouts)], 0)
    looped = len(jobs) * steps / (time.perf_counter() - start)
    return batched, looped


def master_seconds(population: int, generations: int = 5) -> float:
    """Seconds per generation that only rank 0 spends: ask, tell, pickling the checkpoint."""
    import cma

    size = controller_size(Z, H, A)
    es = cma.CMAEvolutionStrategy(np.zeros(size), 0.1, {"popsize": population, "verbose": -9, "seed": 1})
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(generations):
        solutions = es.ask()
        es.tell(solutions, list(rng.normal(size=population)))
        torch.save({"es": es_bytes(es)}, io.BytesIO())
    return (time.perf_counter() - start) / generations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to time each real-game measurement")
    parser.add_argument("--repeats", type=int, default=3, help="runs per rate (the best counts)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where V, M and C run")
    parser.add_argument("--ranks", type=int, default=64, help="evaluating ranks assumed for the master's share")
    parser.add_argument("--channels", type=int, default=32, help="V's width, as vae.channels (32: the paper's and the demo's)")
    parser.add_argument("--precision", default="float32", choices=["float32", "int8"],
                        help="V's encoder in play, as vae.precision (int8: CPU only)")
    parser.add_argument("--episode-steps", type=int, default=800, help="typical Space Invaders episode length (steps)")
    args = parser.parse_args()
    pin_to_one_core()
    torch.set_num_threads(1)
    device = select_device(args.device)
    results = {"device": str(device), "vae_channels": args.channels, "vae_precision": args.precision}
    v = {"channels": args.channels, "precision": args.precision}
    raw_steps = best_of(args.repeats, lambda: raw_emulator_fps(args.seconds)) / EnvConfig().frame_skip
    real = best_of(args.repeats, lambda: real_game_steps_per_s(device, args.seconds, batch=64, **v))
    encoder = min(encoder_seconds_per_frame(device, 64, **v) for _ in range(args.repeats))
    bound = 1 / (1 + encoder * raw_steps)  # the emulator and the encoder alone, everything else free
    results.update(raw_emulator_steps_per_s=raw_steps, real_game_steps_per_s=real, encoder_s_per_frame=encoder)
    print(f"real-game evaluation: {real:7.0f} steps/s on one core (batch 64, V of {args.channels} channels in {args.precision}, M and C on {device}); raw emulator "
          f"{raw_steps:7.0f} steps/s; ratio {real / raw_steps:.2f} (target >= 0.70)")
    print(f"  V's encoder alone takes {encoder * 1e6:.0f} us a frame on {device}, so no evaluation here can exceed "
          f"a ratio of {bound:.2f}")
    grabless = best_of(args.repeats, lambda: raw_emulator_fps(args.seconds, grab=False)) / EnvConfig().frame_skip
    blind = best_of(args.repeats, lambda: baseline_steps_per_s(args.seconds, 25, look=False))
    looking = best_of(args.repeats, lambda: baseline_steps_per_s(args.seconds, 25, look=True))
    results.update(raw_emulator_no_grab_steps_per_s=grabless, baseline_steps_per_s=blind, baseline_looking_steps_per_s=looking)
    print(f"baselines: {blind:7.0f} steps/s blind, against the emulator's {grabless:7.0f} without screen grabs; ratio "
          f"{blind / grabless:.2f}; told to look, {looking:7.0f} steps/s ({looking / grabless:.2f})")
    runs = [dream_speedup(device, population=64, rollouts=16, steps=50) for _ in range(args.repeats)]
    batched, looped = max(r[0] for r in runs), max(r[1] for r in runs)
    results.update(dream_batched_steps_per_s=batched, dream_looped_steps_per_s=looped)
    print(f"dream: {batched:9.0f} steps/s for the population as one batch, {looped:9.0f} looping over candidates; "
          f"{batched / looped:.1f}x (target >= 5x on CPU, >= 50x on a GPU)")
    master = master_seconds(64)
    play = 64 * 16 * args.episode_steps / (args.ranks * real)
    results.update(master_s=master, generation_play_s=play)
    print(f"master: {master * 1e3:.0f} ms per generation (ask, tell, checkpoint pickle) against {play:.1f} s of play on "
          f"{args.ranks} ranks; share {100 * master / (master + play):.1f}% (target <= 2%)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
