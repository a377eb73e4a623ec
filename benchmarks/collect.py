"""Collection speed against its physical limit, the raw emulator, measured in the same run.

Prints emulator frames per second on one core for
- the raw emulator: ALEInterface.act plus a screen grab every frame (the limit), and
- the collect stage end to end (env wrapper, random policy, Zarr compression and commits),
and their ratio (target >= 0.80), the env wrapper alone for reference, then the peak memory of collections of 1x and 4x the
episodes (target: no growth with the number of episodes).

    python benchmarks/collect.py [--seconds 5] [--episodes 8]
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


def pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def raw_emulator_fps(seconds: float) -> float:
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(ale_py.roms.get_rom_path("space_invaders"))
    actions = ale.getMinimalActionSet()
    screen = np.empty((*ale.getScreenDims(), 3), np.uint8)
    rng = np.random.default_rng(0)
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in rng.integers(0, len(actions), 256):
            ale.act(actions[a])
            ale.getScreenRGB(screen)
            if ale.game_over():
                ale.reset_game()
        frames += 256
    return frames / (time.perf_counter() - start)


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


def collect_fps(episodes: int, envs_per_task: int) -> tuple[float, int]:
    from worldmodels import config
    from worldmodels.collect import collect, open_rollouts

    cfg = config.load(ROOT / "configs" / "demo.yaml", [f"collect.episodes={episodes}", f"collect.envs_per_task={envs_per_task}",
                                                       "logging.wandb=false", "logging.every_s=1000"])
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        collect(cfg, run_dir)
        elapsed = time.perf_counter() - start
        steps = int((open_rollouts(cfg, run_dir).lengths() - 1).sum())
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
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to time the raw emulator")
    parser.add_argument("--episodes", type=int, default=16, help="episodes per collect measurement")
    args = parser.parse_args()
    pin_to_one_core()
    os.environ["WANDB_MODE"] = "disabled"
    raw = raw_emulator_fps(args.seconds)
    wrapper = wrapper_fps(args.seconds)
    results = {"raw_emulator_fps": raw, "env_wrapper_fps": wrapper}
    print(f"env wrapper alone:             {wrapper:8.0f} frames/s on one core; ratio to raw {wrapper / raw:.2f} "
          "(the gap is the standard INTER_AREA resize)")
    for batch in (1, 8):
        fps, steps = collect_fps(args.episodes, batch)
        results[f"collect_fps_envs{batch}"] = fps
        print(f"collect (envs_per_task={batch}): {fps:8.0f} frames/s on one core over {steps} steps; "
              f"raw emulator {raw:8.0f} frames/s; ratio {fps / raw:.2f} (target >= 0.80)")
    small, large = peak_rss_mib(args.episodes), peak_rss_mib(4 * args.episodes)
    results.update(peak_rss_mib_1x=small, peak_rss_mib_4x=large)
    print(f"peak memory: {small:.0f} MiB for {args.episodes} episodes, {large:.0f} MiB for {4 * args.episodes}; "
          f"growth {large / small:.2f}x (target: about 1.0x)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
