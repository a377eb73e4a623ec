"""Collection speed against its physical limit, the raw emulator, measured in the same run.

Prints emulator frames per second on one core for
- the raw emulator: ALEInterface.act plus a screen grab every frame (the limit), and
- the collect stage end to end (env wrapper, random policy, Zarr compression and commits) as
  configured by default, one environment per task,
and their ratio (target >= 0.80; each rate the best of --repeats runs); for reference, the env
wrapper alone and collect with eight environments in lockstep (as batched policies play); then
the peak memory of collections of 1x and 4x the episodes (target: no growth with the number of
episodes).

    python benchmarks/collect.py [--seconds 3] [--episodes 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.limits import best_of, pin_to_one_core, raw_emulator_fps  # noqa: E402


def wrapper_fps(seconds: float) -> float:
    """The env wrapper alone (4 emulator frames, 2 screen grabs, max-pool, INTER_AREA resize per step)."""
    from worldmodels.config import EnvConfig
    from worldmodels.envs import AtariEnv

    env = AtariEnv(EnvConfig())
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in rng.integers(0, 6, 256):
            if any(env.step(int(a))[2:4]):
                env.reset(seed=steps)
        steps += 256
    return steps * env.cfg.frame_skip / (time.perf_counter() - start)


def observation_us(calls: int = 3000) -> float:
    """Microseconds per step spent making the observation (max-pool, INTER_AREA resize): work
    the raw emulator does not do, which alone keeps the wrapper below it."""
    from worldmodels.config import EnvConfig
    from worldmodels.envs import AtariEnv

    env = AtariEnv(EnvConfig())
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(calls):
        env._observation()
    return (time.perf_counter() - start) / calls * 1e6


def collect_fps(episodes: int, envs_per_task: int) -> tuple[float, int]:
    from worldmodels import config
    from worldmodels.collect import open_rollouts
    from worldmodels.pipeline import run_stage
    from worldmodels.rundir import RunDir

    cfg = config.load(ROOT / "configs" / "demo.yaml", [f"collect.episodes={episodes}", f"collect.envs_per_task={envs_per_task}",
                                                       "logging.wandb=false", "logging.every_s=1000"])
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        run_stage("collect", cfg, run_dir)  # as a stage: it writes into a run directory it set up
        elapsed = time.perf_counter() - start
        steps = int((open_rollouts(cfg, RunDir(run_dir)).lengths() - 1).sum())
    return steps * cfg.env.frame_skip / elapsed, steps


def peak_rss_mib(episodes: int) -> float:
    """Peak resident memory of a separate process that collects `episodes` episodes.

    Read as VmHWM from /proc: the child's ru_maxrss would be this (larger) process's peak, which
    Linux carries into a child across fork and exec.
    """
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import benchmarks.collect as b, re; "
            f"b.collect_fps({episodes}, 1); print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to time the raw emulator and the wrapper")
    # A task's start-up (0.1 s a ROM load per environment, the store) is part of the rate: a task
    # of the example cluster profile plays 100 episodes, so 32 still weigh it three times more.
    parser.add_argument("--episodes", type=int, default=32, help="episodes per environment in a collect measurement")
    parser.add_argument("--repeats", type=int, default=3, help="runs per rate (the best counts)")
    args = parser.parse_args()
    pin_to_one_core()
    os.environ["WANDB_MODE"] = "disabled"
    raw = best_of(args.repeats, lambda: raw_emulator_fps(args.seconds))
    wrapper = best_of(args.repeats, lambda: wrapper_fps(args.seconds))
    observation = min(observation_us() for _ in range(args.repeats))
    from worldmodels.config import EnvConfig

    raw_step_us = EnvConfig().frame_skip * 1e6 / raw
    results = {"raw_emulator_fps": raw, "env_wrapper_fps": wrapper, "observation_us": observation}
    print(f"env wrapper alone:             {wrapper:8.0f} frames/s on one core; ratio to raw {wrapper / raw:.2f} "
          f"(making the observation costs {observation:.0f} us a step, {observation / raw_step_us:.0%} of a raw 4-frame step)")
    for batch in (1, 8):
        # --episodes per environment: a task's start-up (a ROM load per environment) weighs
        # the same at every batch size, as it does in tasks of a real collection
        runs = [collect_fps(args.episodes * batch, batch) for _ in range(args.repeats)]
        fps, steps = max(runs)
        results[f"collect_fps_envs{batch}"] = fps
        print(f"collect (envs_per_task={batch}): {fps:8.0f} frames/s on one core over {steps} steps; "
              f"raw emulator {raw:8.0f} frames/s; ratio {fps / raw:.2f} "
              + ("(target >= 0.80)" if batch == 1 else "(lockstep, for reference)"))
    small, large = peak_rss_mib(args.episodes), peak_rss_mib(4 * args.episodes)
    results.update(peak_rss_mib_1x=small, peak_rss_mib_4x=large)
    print(f"peak memory: {small:.0f} MiB for {args.episodes} episodes, {large:.0f} MiB for {4 * args.episodes}; "
          f"growth {large / small:.2f}x (target: about 1.0x)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
