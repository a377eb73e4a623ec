"""What every benchmark shares: one core, the best of repeated runs, and the raw emulator.

A rate is the best of several runs because timing noise on a shared machine only ever slows a
run down; a ratio compares the best of each side, measured in the same process.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np


def pin_to_one_core() -> None:
    """Per-core rates: this process and its children run on one core."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def best_of(repeats: int, measure: Callable[[], float]) -> float:
    return max(measure() for _ in range(repeats))


def raw_emulator_fps(seconds: float, grab: bool = True) -> float:
    """Space Invaders frames/s of the bare emulator: ALEInterface.act plus a screen grab every frame
    (without `grab`: act alone, the limit of a policy that ignores the screen)."""
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
            if grab:
                ale.getScreenRGB(screen)
            if ale.game_over():
                ale.reset_game()
        frames += 256
    return frames / (time.perf_counter() - start)
