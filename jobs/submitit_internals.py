"""The one place that reaches inside submitit (pinned at 1.5.4), for what its public API lacks.

- `sbatch_script`: the script an executor would submit (for `submit --dry-run` and the golden
  files), rendered by `SlurmExecutor._make_submission_file_text` with `_submitit_command_str`,
  and `map_count`, which `map_array` sets before rendering an array;
- `requeue_from_outside`: inside a container without Slurm's tools, `SlurmJobEnvironment._requeue`
  (which runs `scontrol requeue`) is replaced by an exit that containers/run.sh acts on, on the host;
- `SbatchRefused`: what `map_array` raises when sbatch refuses a job (`core.utils.FailedJobError`,
  not exported at the top level), with sbatch's stderr as its message.

`check()` says in one line which of these an upgrade removed; tests/test_adapters.py runs it.
"""

from __future__ import annotations

from typing import Any

USED = {
    "submitit.AutoExecutor()._executor": "the Slurm executor behind AutoExecutor",
    "SlurmExecutor._make_submission_file_text": "renders the sbatch script",
    "SlurmExecutor._submitit_command_str": "the command the script runs",
    "SlurmExecutor.parameters['map_count']": "how map_array asks for an array",
    "SlurmJobEnvironment._requeue": "runs scontrol requeue on preemption",
    "submitit.core.utils.FailedJobError": "raised when sbatch refuses a job",
}

try:
    from submitit.core.utils import FailedJobError as SbatchRefused
except ImportError:  # check() names it
    class SbatchRefused(Exception):  # type: ignore[no-redef]  # never raised: nothing is caught in its name
        pass


def sbatch_script(executor: Any, array_size: int = 1) -> str:
    """The sbatch script `executor` (a submitit.AutoExecutor for Slurm) would submit."""
    slurm = executor._executor
    if array_size > 1:
        slurm.parameters["map_count"] = array_size
    return slurm._make_submission_file_text(slurm._submitit_command_str, "DRYRUN")


def requeue_from_outside(exit_code: int) -> None:
    """Make submitit's requeue exit with `exit_code` instead of calling scontrol (absent in the image)."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    def ask_the_host(self, countdown: int) -> None:
        raise SystemExit(exit_code)

    SlurmJobEnvironment._requeue = ask_the_host


def check() -> None:
    """Raise RuntimeError naming what is missing when this submitit lacks something used here."""
    import tempfile

    import submitit
    import submitit.core.utils
    from submitit.slurm.slurm import SlurmExecutor, SlurmJobEnvironment

    with tempfile.TemporaryDirectory() as folder:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        missing = [name for name, ok in (
            ("submitit.AutoExecutor()._executor", isinstance(getattr(executor, "_executor", None), SlurmExecutor)),
            ("SlurmExecutor._make_submission_file_text", callable(getattr(SlurmExecutor, "_make_submission_file_text", None))),
            ("SlurmExecutor._submitit_command_str", isinstance(getattr(SlurmExecutor, "_submitit_command_str", None), property)),
            ("SlurmJobEnvironment._requeue", callable(getattr(SlurmJobEnvironment, "_requeue", None))),
            ("submitit.core.utils.FailedJobError", SbatchRefused is getattr(submitit.core.utils, "FailedJobError", None)),
        ) if not ok]
        if not missing:
            executor.update_parameters(timeout_min=1)
            if "#SBATCH --array=0-2" not in sbatch_script(executor, 3):
                missing.append("SlurmExecutor.parameters['map_count']")
    if missing:
        raise RuntimeError(f"submitit {submitit.__version__} lacks what jobs/submitit_internals.py uses: "
                           + "; ".join(f"{name} ({USED[name]})" for name in missing))
