"""The whole exception hierarchy of sandboxrunner, and the CLI's exit codes.

Every error a user can see subclasses `SandboxRunnerError`. Messages name what failed and
where: the job name, the file, the pattern, the list of known jobs.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_REDIS = 4
EXIT_IN_USE = 5  # `redis stop` refused: live supervisors use the embedded server


class SandboxRunnerError(Exception):
    """Base of every sandboxrunner error."""


class ConfigError(SandboxRunnerError):
    """A configuration value, key, flag or environment variable is invalid."""


class JobLoadError(SandboxRunnerError):
    """A job file or plugin job failed to load or validate."""


class UnknownJob(SandboxRunnerError):
    """The job name is not registered; the message lists the known names."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = sorted(known)
        listing = ", ".join(self.known) if self.known else "(none: no job files were found)"
        super().__init__(f"unknown job {name!r}; available jobs: {listing}")


class InvalidJobData(SandboxRunnerError):
    """Job data, a timeout or a singleton key is not acceptable; nothing was enqueued."""


class RedisUnavailable(SandboxRunnerError):
    """Redis could not be reached; the message names the address without its password."""


class ServerInUse(SandboxRunnerError):
    """The embedded server was not stopped: live supervisors use it (named in the message)."""


class WaitTimeout(SandboxRunnerError):
    """The caller stopped waiting; the job itself stays queued or running."""

    def __init__(self, job_id: str, waited_ms: int) -> None:
        self.job_id = job_id
        super().__init__(
            f"gave up waiting for job {job_id} after {waited_ms} ms; "
            "the job stays queued or running and its result can still be fetched"
        )


class JobNotFound(SandboxRunnerError):
    """No job has that id: it was never enqueued, or its result expired (result_ttl)."""


class NoSupervisor(SandboxRunnerError):
    """No live supervisor serves the job's queue, so a waiting caller would hang."""


class DeadlockError(SandboxRunnerError):
    """run_job was called from inside a job in a way that would wait for itself."""


class JobError(SandboxRunnerError):
    """The job ran and did not succeed (base of JobFailed and JobTimeout)."""

    def __init__(
        self,
        message: str,
        *,
        job_id: str = "",
        job_name: str = "",
        error_type: str = "",
        error_message: str = "",
        remote_traceback: str = "",
    ) -> None:
        self.job_id = job_id
        self.job_name = job_name
        self.error_type = error_type
        self.error_message = error_message
        self.remote_traceback = remote_traceback
        super().__init__(message)


class JobFailed(JobError):
    """The handler raised, its result was not JSON, its worker crashed, or it stalled too often."""


class JobTimeout(JobError):
    """The job ran past its time limit."""
