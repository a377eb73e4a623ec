import dataclasses

import cv2
import gymnasium as gym
import numpy as np
import pytest

from worldmodels.config import EnvConfig
from worldmodels.envs import AtariEnv
from worldmodels.errors import ConfigError
from worldmodels.resize import AreaResize


def play(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    frames, rewards = [obs], []
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        frames.append(obs)
        rewards.append(r)
        if term or trunc:
            break
    return np.stack(frames), np.array(rewards)


def test_observations_are_small_rgb_uint8():
    env = AtariEnv(EnvConfig())
    obs, info = env.reset(seed=1)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert env.num_actions == 6 and env.action_space.n == 6
    assert 1 <= info["noops"] <= 30
    obs, reward, terminated, truncated, _ = env.step(1)
    assert obs.shape == (64, 64, 3) and isinstance(reward, float)
    assert env.observation_space.contains(obs)


def test_matches_gymnasiums_standard_atari_preprocessing_frame_for_frame():
    # gymnasium's AtariPreprocessing (frameskip 4, max over the last two frames, INTER_AREA
    # resize) over the NoFrameskip game is the reference wrapper stack.
    import ale_py

    gym.register_envs(ale_py)
    reference = gym.wrappers.AtariPreprocessing(gym.make("SpaceInvadersNoFrameskip-v4"), noop_max=0, frame_skip=4,
                                                screen_size=64, grayscale_obs=False)
    ours = AtariEnv(EnvConfig(noop_max=0))
    actions = np.random.default_rng(0).integers(0, 6, 300)
    ref_frames, ref_rewards = [reference.reset(seed=0)[0]], []
    for a in actions:
        obs, r, term, trunc, _ = reference.step(int(a))
        ref_frames.append(obs)
        ref_rewards.append(r)
    frames, rewards = play(ours, 0, actions)
    np.testing.assert_array_equal(frames, np.stack(ref_frames))
    np.testing.assert_array_equal(rewards, ref_rewards)
    assert rewards.sum() > 0  # the comparison covered scoring, not only an idle screen


@pytest.mark.parametrize("size, exact", [(64, True), (32, True), (96, True), (84, False), (16, False), (200, False)])
def test_area_resize_is_opencvs_bit_for_bit(size, exact):
    # Random screens hit every residue of the exact mean, ties' neighbours included; coarse
    # ones (few colours, as Atari screens) repeat the same sums over large areas.
    resize = AreaResize(210, 160, size)
    assert resize.exact == exact  # the matrix route where it is provably exact, OpenCV elsewhere
    rng = np.random.default_rng(size)
    for levels in (256, 4, 2):
        for _ in range(20):
            screen = (rng.integers(0, levels, (210, 160, 3)) * (255 // (levels - 1))).astype(np.uint8)
            np.testing.assert_array_equal(resize(screen), cv2.resize(screen, (size, size), interpolation=cv2.INTER_AREA))


def test_observation_is_the_max_of_the_last_two_frames():
    # Space Invaders' lasers blink on alternate frames: a single frame would lose them.
    import ale_py

    cfg = EnvConfig(noop_max=0)
    env = AtariEnv(cfg)
    env.reset(seed=0)
    raw = ale_py.ALEInterface()
    raw.setFloat("repeat_action_probability", 0.0)
    raw.loadROM(ale_py.roms.get_rom_path("space_invaders"))
    actions = raw.getMinimalActionSet()
    differed = 0
    for step in range(120):
        a = step % 6
        obs, *_ = env.step(a)
        screens = []
        for _ in range(4):
            raw.act(actions[a])
            screens.append(raw.getScreenRGB())
        expected = cv2.resize(np.maximum(screens[2], screens[3]), (64, 64), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(obs, expected)
        last_only = cv2.resize(screens[3], (64, 64), interpolation=cv2.INTER_AREA)
        differed += not np.array_equal(obs, last_only)
    assert differed > 0  # pooling changed what is seen on some steps


def test_last_steps_pool_as_gymnasiums_preprocessing_does():
    # An episode's last step ends on its last frame (pooling the previous observation with its
    # second-to-last frame, in place) or sooner (observing the previous observation again).
    # Holding NOOP, the game ends on the same frame whatever the frame skip, at another place
    # within the last step: these skips cover both endings.
    import ale_py

    gym.register_envs(ale_py)
    endings = set()
    for skip in (2, 3, 4):
        reference = gym.wrappers.AtariPreprocessing(gym.make("SpaceInvadersNoFrameskip-v4"), noop_max=0, frame_skip=skip,
                                                    screen_size=64, grayscale_obs=False)
        expected = [reference.reset(seed=0)[0]]
        terminated = False
        while not terminated:
            obs, _, terminated, _, _ = reference.step(0)
            expected.append(obs)
        frames = reference.unwrapped.ale.getEpisodeFrameNumber()
        endings.add("on its last frame" if (frames - 1) % skip == skip - 1 else "sooner")
        observed, _ = play(AtariEnv(EnvConfig(noop_max=0, frame_skip=skip)), 0, [0] * len(expected))
        np.testing.assert_array_equal(observed, np.stack(expected))
    assert endings == {"on its last frame", "sooner"}


def test_episode_k_is_reproduced_exactly_whatever_ran_before():
    cfg = EnvConfig()
    actions = np.random.default_rng(1).integers(0, 6, 200)
    first, _ = play(AtariEnv(cfg), 3, actions)
    env = AtariEnv(cfg)
    play(env, 0, actions[::-1])  # another episode first, in the same emulator
    again, _ = play(env, 3, actions)
    np.testing.assert_array_equal(first, again)
    other, _ = play(AtariEnv(cfg), 4, actions)
    assert not np.array_equal(first, other[: len(first)])


def test_sticky_actions_are_drawn_from_the_episode_seed():
    # Machado et al. (2018): per frame, the previous action instead of the chosen one with p = 0.25
    sticky = EnvConfig(noop_max=0, repeat_action_probability=0.25)
    actions = np.random.default_rng(2).integers(0, 6, 300)
    first, _ = play(AtariEnv(sticky), 5, actions)
    again, _ = play(AtariEnv(sticky), 5, actions)
    np.testing.assert_array_equal(first, again)  # the same seed, the same game
    other_seed, _ = play(AtariEnv(sticky), 6, actions)
    plain, _ = play(AtariEnv(EnvConfig(noop_max=0)), 5, actions)
    n = min(len(first), len(other_seed), len(plain))
    # without no-ops the seed only draws the repeats: the games differ through them alone
    assert not np.array_equal(first[:n], other_seed[:n]) and not np.array_equal(first[:n], plain[:n])


def test_episode_is_truncated_at_max_steps():
    env = AtariEnv(EnvConfig(max_steps=5))
    env.reset(seed=0)
    flags = [env.step(0)[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]


@pytest.mark.parametrize("env_id, message", [
    ("SpaceInvadersNoFrameskip-v9", "unknown environment"),
    ("CartPole-v1", "not an Atari"),
    ("ALE/SpaceInvaders-v5", "NoFrameskip"),
])
def test_unusable_env_ids_are_clear_errors(env_id, message):
    with pytest.raises(ConfigError, match=message):
        AtariEnv(dataclasses.replace(EnvConfig(), id=env_id))


def test_a_policy_that_draws_nothing_plays_one_game_per_noop_start_under_v4():
    # why evaluate and train-controller play one episode of each such game per policy (same_games)
    import torch

    from worldmodels.controller import WorldModelPolicy, controller_size
    from worldmodels.envs import game_of_seed
    from worldmodels.mdnrnn import MDNRNN
    from worldmodels.rollout import Episode, play as play_batch, same_games
    from worldmodels.vae import ConvVAE

    cfg = EnvConfig(max_steps=150)
    seeds = [0, 2, 26, 7, 29]  # no-op frames 26, 26, 26, 29, 29
    assert [game_of_seed(cfg, s) for s in seeds] == [26, 26, 26, 29, 29]
    sticky = dataclasses.replace(cfg, repeat_action_probability=0.25)
    assert game_of_seed(sticky, 0) is None
    jobs = [Episode(i, s, tag=i % 2) for i, s in enumerate(seeds)]  # two controllers, alternating
    assert same_games(cfg, jobs) == {0: [0, 2], 1: [1], 3: [3], 4: [4]}
    assert same_games(sticky, jobs) == {k: [k] for k in range(5)}
    torch.manual_seed(0)
    params = torch.randn(1, controller_size(32, 256, 6)) * 0.5
    policy = WorldModelPolicy(ConvVAE(32).eval(), MDNRNN(32, 6, 256, 5).eval(), params, batch=3)
    rows = {}
    with torch.no_grad():  # 3 at a time: the games share their batches with different others
        play_batch(cfg, policy, [Episode(i, s, tag=0) for i, s in enumerate(seeds)],
                   lambda p: rows.__setitem__(p.job.k, {k: v.copy() for k, v in p.arrays().items()}), batch=3,
                   record=True)
    for a, b in [(0, 1), (0, 2), (3, 4)]:
        for name in ("frames", "actions", "rewards"):
            np.testing.assert_array_equal(rows[a][name], rows[b][name])
    assert len(set(rows[0]["actions"].tolist())) > 1  # a controller that acts on what it sees
    assert not np.array_equal(rows[0]["frames"][:100], rows[3]["frames"][:100])


@pytest.mark.parametrize("sticky", [0.0, 0.25])
def test_blind_policies_play_the_same_games_without_the_screen(sticky):
    # the baselines ignore the screen, so play skips making it for them: the same returns and lengths
    from worldmodels.policies import RandomRepeatPolicy, ScriptedPolicy
    from worldmodels.rollout import Episode, play as play_batch

    class Looking:  # the same policy, told to look
        blind = False

        def __init__(self, policy):
            self.policy, self.seen = policy, 0

        def begin(self, slot, job):
            self.policy.begin(slot, job)

        def end(self, slot, played):
            self.policy.end(slot, played)

        def act(self, obs, slots):
            self.seen += int(obs.any())
            return self.policy.act(obs, slots)

    cfg = EnvConfig(max_steps=300, repeat_action_probability=sticky)
    names = AtariEnv(cfg).action_names
    for make in (lambda: RandomRepeatPolicy(6, 4, 3), lambda: ScriptedPolicy("sweep_fire", names, 3)):
        games = []
        for policy in (make(), Looking(make())):
            out = {}
            jobs = [Episode(k, 10 + k, np.random.default_rng(k)) for k in range(5)]
            play_batch(cfg, policy, jobs, lambda p: out.__setitem__(p.job.k, (p.ret, p.steps)), batch=3)
            games.append(out)
        assert policy.seen > 0 and make().blind
        assert games[0] == games[1] and len(set(games[0].values())) > 1, games
