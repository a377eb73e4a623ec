"""The submission layer: each stage as a Slurm job through submitit (the library never imports submitit)."""
