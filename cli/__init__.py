"""The command line of `python -m worldmodels`: above the library (worldmodels/) and the Slurm layer (jobs/)."""
