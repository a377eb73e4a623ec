"""World Models (Ha & Schmidhuber 2018) for Atari Space Invaders, as resumable batch stages.

Each stage is a function of (config, run directory); see worldmodels.cli for the commands.
This package never imports submitit: the job layer in jobs/ wraps it.
"""
