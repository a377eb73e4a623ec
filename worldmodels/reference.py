"""Published Space Invaders scores to read a result against (mean episode return, no-op starts).

Mnih et al. (2015), "Human-level control through deep reinforcement learning", Nature: its random
policy, its professional human tester, and DQN. The run's own baselines (random, always FIRE, sweep
while firing) are measured on the run's evaluation episodes and sit beside these in the report.
"""

PUBLISHED_SOURCE = "Mnih et al. (2015), no-op starts"
PUBLISHED = {"random": 148.0, "human": 1668.7, "DQN": 1976.0}
