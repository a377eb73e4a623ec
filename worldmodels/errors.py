"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class WorldModelsError(Exception):
    """A problem with the user's input or data, reported as one line without a traceback."""


class ConfigError(WorldModelsError):
    """An unknown config key, a value of the wrong type or out of range, or a conflicting run."""


class DataError(WorldModelsError):
    """A missing, corrupt or mismatched dataset or artifact."""


class TrainingError(WorldModelsError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


class Interrupted(Exception):
    """A stage stopped on SIGTERM/SIGUSR2 after saving its progress; rerunning it resumes."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}; progress saved, rerun to resume")
        self.signum = signum
