"""World Models (Ha & Schmidhuber 2018) for Atari Space Invaders, as resumable batch stages.

Each stage is a function of (config, run directory); the command line (cli/) runs
them. This package never imports submitit nor the job layer in jobs/, which wraps it.
"""
