"""The whole exception hierarchy of sandboxrunner, and the CLI's exit codes.

Every error a user can see subclasses `SandboxRunnerError`. Messages name what failed and
where: the job name, the file, the pattern, the list of known jobs.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_JOB_FAILED = 1  # the job ran and failed or timed out, or was cancelled
EXIT_USAGE = 2  # bad input: unknown job name or job id, data not JSON, a bad option
EXIT_CONFIG = 3  # bad configuration or job file, or no project found
EXIT_REDIS = 4  # Redis unreachable or refused (full, ACL, replica...), or no embedded server
EXIT_WAIT_TIMEOUT = 5  # the caller stopped waiting; the job goes on
EXIT_NO_SUPERVISOR = 6  # nobody serves the job's queue; the job stays queued
EXIT_IN_USE = 7  # `redis stop` refused: live supervisors use the embedded server


class SandboxRunnerError(Exception):
    """Base of every sandboxrunner error."""


class ConfigError(SandboxRunnerError):
    """A configuration value, key, flag or environment variable is invalid."""


class JobLoadError(SandboxRunnerError):
    """A job file or plugin job failed to load or validate."""


class UnknownJob(SandboxRunnerError):
    """The job name is not registered; the message lists the known names and says where
    job files were looked for."""

    def __init__(self, name: str, known: list[str], jobs_dir: Path | None = None) -> None:
        self.name = name
        self.known = sorted(known)
        self.jobs_dir = jobs_dir
        if self.known:
            source = f" (job files from {jobs_dir}, and plugins)" if jobs_dir else ""
            message = f"unknown job {name!r}; available jobs: {', '.join(self.known)}{source}"
        else:
            missing = " (no such folder)" if jobs_dir and not jobs_dir.is_dir() else ""
            message = (f"unknown job {name!r}: no jobs at all (no job files in "
                       f"{jobs_dir or 'the jobs folder'}{missing}, no plugin jobs); run this "
                       f"in your project, pass --project DIR or set SANDBOXRUNNER_PROJECT")
        super().__init__(message)


class UnknownQueue(SandboxRunnerError):
    """A queue name given to pause or resume is not one of the queues."""


class InvalidJobData(SandboxRunnerError):
    """Job data, a timeout or a singleton key is not acceptable; nothing was enqueued."""


class InvalidProgress(SandboxRunnerError, ValueError):
    """ctx.progress got a fraction outside 0..1 (or not a number) or a message that is not
    text; nothing was recorded."""


class RedisUnavailable(SandboxRunnerError):
    """Redis could not be reached; the message names the address without its password."""


class RedisRefused(SandboxRunnerError):
    """Redis answered but refused the command; the message says what Redis said, where
    (the address without its password) and what to do. A retry will not help."""


class RedisFull(RedisRefused):
    """Redis reached its maxmemory and refused a write (policy noeviction); nothing of the
    call was written."""


class RedisPermissionDenied(RedisRefused):
    """An ACL refused the Redis user a command, a key or a channel (NOPERM); the message
    names the user and what it needs."""


class RedisReadOnly(RedisRefused):
    """The server is a read-only replica (READONLY): the URL must point at the master."""


class RedisAuthFailed(RedisRefused):
    """Redis refused the login: a wrong user name or password, or none given."""


class RedisTLSFailed(RedisRefused):
    """The TLS connection failed: the server speaks no TLS, or its certificate does not
    verify."""


class RedisWrongServer(RedisRefused):
    """The URL points at a server that is not one Redis sandboxrunner can use as given: a
    Cluster node (use redis+cluster://), a Sentinel (redis+sentinel://), or a server
    older than Redis 7.0."""


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


class InvalidJobState(SandboxRunnerError):
    """The job is not in a state that allows the request (retry of a job that did not fail,
    or whose singleton key another run holds); nothing changed."""


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


class JobCancelled(JobError):
    """The job was cancelled (cancel(), handle.cancel() or `sandboxrunner cancel`)."""


class JobDeleted(JobCancelled):
    """The job was deleted before it ran (delete_job or `sandboxrunner delete`)."""


class CronScheduleNotFound(SandboxRunnerError):
    """No cron schedule of that job name is in Redis."""
