"""Atari through ale-py with the standard wrapper stack built in, and per-episode seeding.

`AtariEnv` gives the same observations as gymnasium's `AtariPreprocessing` (no-op starts,
frameskip with a max over the last two frames, INTER_AREA resize to size x size RGB) on top
of the `NoFrameskip` game, but drives `ALEInterface` directly: it grabs the screen only on the
two frames that are pooled and skips the per-frame wrapper layers, which keeps it at emulator
speed (see benchmarks/collect.py). Each episode restarts from the same power-on state, so an
episode depends only on its seed and its actions, never on the episodes played before it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from worldmodels.config import EnvConfig
from worldmodels.errors import ConfigError
from worldmodels.resize import AreaResize


def rom_of(env_id: str) -> str:
    """The ALE ROM name behind a gymnasium id; a clear error for ids that are not frameskip-1 Atari."""
    import ale_py

    gym.register_envs(ale_py)
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        raise ConfigError(f"config key 'env.id': unknown environment '{env_id}' (expected an ALE id such as SpaceInvadersNoFrameskip-v4)") from None
    game = spec.kwargs.get("game")
    if game is None or "ale_py" not in str(spec.entry_point):
        raise ConfigError(f"config key 'env.id': '{env_id}' is not an Atari (ale-py) environment")
    if spec.kwargs.get("frameskip") != 1 or spec.kwargs.get("repeat_action_probability", 0.0) != 0.0:
        raise ConfigError(f"config key 'env.id': '{env_id}' skips frames or repeats actions itself; use its NoFrameskip-v4 id")
    return game


def _noop_frames(cfg: EnvConfig, rng: np.random.Generator) -> int:
    """The no-op frames an episode starts with: the first draw from its generator."""
    return int(rng.integers(1, cfg.noop_max + 1)) if cfg.noop_max > 0 else 0


def game_of_seed(cfg: EnvConfig, seed: int) -> int | None:
    """What tells apart the games that episodes of these seeds play with the same actions: their
    no-op frames, when the emulator draws nothing after them (no sticky actions); None when it
    does. So a policy that draws nothing plays at most noop_max different games."""
    return None if cfg.repeat_action_probability else _noop_frames(cfg, np.random.default_rng(seed))


class AtariEnv(gym.Env):
    """One Atari game as a gymnasium env (so gymnasium's wrappers, e.g. RecordVideo, apply).

    Observations are uint8 [size, size, 3]; actions index the game's minimal action set.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, cfg: EnvConfig, render_mode: str | None = None):
        import ale_py

        self.cfg = cfg
        self.render_mode = render_mode
        # videos play at the game's speed: the emulator runs 60 frames a second
        self.metadata = {**self.metadata, "render_fps": 60 / cfg.frame_skip}
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # before construction: no banner
        self._ale = ale_py.ALEInterface()
        self._ale.setFloat("repeat_action_probability", 0.0)
        self._ale.setInt("random_seed", 0)
        self._ale.loadROM(ale_py.roms.get_rom_path(rom_of(cfg.id)))
        # Restoring this state starts every episode from the same point, which is cheaper than
        # gymnasium's reseed-by-reloading-the-ROM (about 0.1 s) and has the same effect here:
        # with repeat_action_probability 0 the emulator draws no random numbers.
        self._power_on = self._ale.cloneState()
        self._actions = self._ale.getMinimalActionSet()
        h, w = self._ale.getScreenDims()
        # The observation at full size: the max of its step's last two frames. Only it carries
        # over to the next step (see step); the second-to-last frame, needed only within a step,
        # goes to a buffer that the envs of a thread share.
        self._pooled = np.zeros((h, w, 3), dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(len(self._actions))
        self.observation_space = gym.spaces.Box(0, 255, (cfg.size, cfg.size, 3), np.uint8)
        self._np_random = np.random.default_rng()
        self._steps = 0
        self._last_act = self._actions[0]  # what the emulator did last (sticky actions repeat it)

    @property
    def num_actions(self) -> int:
        return len(self._actions)

    @property
    def action_names(self) -> list[str]:
        """Names of the minimal action set, e.g. NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE."""
        return [a.name for a in self._actions]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode: power-on state, then 1..noop_max no-op frames drawn from `seed`."""
        if seed is not None:
            self._np_random = np.random.default_rng(seed)
        self._ale.restoreState(self._power_on)
        self._last_act = self._actions[0]
        noops = _noop_frames(self.cfg, self.np_random)
        for _ in range(noops):
            self._ale.act(self._actions[0])
            if self._ale.game_over():
                self._ale.restoreState(self._power_on)
        self._ale.getScreenRGB(self._pooled)
        self._steps = 0
        return self._observation(), {"noops": noops}

    def step(self, action: int, observe: bool = True) -> tuple[np.ndarray | None, float, bool, bool, dict]:
        """Repeat `action` for frame_skip frames; observe the max of the last two frames.

        With observe=False the screen is neither grabbed nor resized and the observation is None:
        for policies that ignore it, about a third of a step saved; the game is the same."""
        ale, act, skip = self._ale, self._actions[int(action)], self.cfg.frame_skip
        shape = self._pooled.shape
        second_last = _per_thread(("second_last", shape), lambda: np.empty(shape, np.uint8))
        sticky = self.cfg.repeat_action_probability
        # sticky actions: per frame, the previous frame's action instead of the chosen one with
        # this chance (as ALE does it), drawn here from the episode's generator
        repeats = self.np_random.random(skip) < sticky if sticky else None
        reward = 0.0
        terminated = False
        for t in range(skip):
            if repeats is not None:
                if not repeats[t]:
                    self._last_act = act
                reward += ale.act(self._last_act)
            else:
                reward += ale.act(act)
            if ale.game_over():
                terminated = True
                break
            if observe and t >= skip - 2:
                ale.getScreenRGB(second_last if t == skip - 2 else self._pooled)
        self._steps += 1
        truncated = not terminated and self._steps >= self.cfg.max_steps
        if not observe:
            return None, reward, terminated, truncated, {}
        if t == skip - 1:  # frame_skip >= 2: the second-to-last frame was grabbed
            # The max goes in place, as in gymnasium's AtariPreprocessing, and so does a step that
            # ends early: ending on its last frame, it pools the previous observation with its
            # second-to-last frame; ending sooner, it grabs nothing and observes the previous one.
            np.maximum(self._pooled, second_last, out=self._pooled)
        return self._observation(), reward, terminated, truncated, {}

    def render(self) -> np.ndarray | None:
        """The full-resolution screen (for videos), when made with render_mode='rgb_array'."""
        return self._ale.getScreenRGB() if self.render_mode == "rgb_array" else None

    def _observation(self) -> np.ndarray:
        # OpenCV's INTER_AREA, bit for bit (tests compare with gymnasium's AtariPreprocessing),
        # at a fraction of its cost
        height, width = self._pooled.shape[:2]
        size = self.cfg.size
        resize = _per_thread(("resize", height, width, size), lambda: AreaResize(height, width, size))
        return resize(self._pooled)


class EnvPool:
    """Environments of one config, loaded when first needed and then reused: loading the ROM
    costs 0.1 s an environment, and every episode restarts from the power-on state anyway."""

    def __init__(self, cfg: EnvConfig):
        self.cfg = cfg
        self._envs: list[AtariEnv] = []

    def take(self, n: int) -> list[AtariEnv]:
        """The first n environments of the pool, loading those it lacks."""
        self._envs.extend(AtariEnv(self.cfg) for _ in range(n - len(self._envs)))
        return self._envs[:n]


_of_thread = threading.local()


def _per_thread(key: tuple, make: Callable[[], Any]) -> Any:
    """This thread's object under `key`, made on first use. The envs a thread steps share their
    scratch (the second-to-last frame, the resizer's buffers), which then stays in cache where
    one set per env would not; each is used within one step, so sharing is safe in a thread."""
    if not hasattr(_of_thread, "objects"):
        _of_thread.objects = {}
    if key not in _of_thread.objects:
        _of_thread.objects[key] = make()
    return _of_thread.objects[key]
