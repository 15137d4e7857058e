"""sandboxrunner: background jobs for Python on Redis.

Public API: run_job, arun_job, enqueue, get_result, get_job (a JobInfo), register_job,
init_worker, and the errors.
"""

from .client import JobHandle, aget_job, arun_job, enqueue, get_job, get_result, run_job
from .errors import (
    ConfigError,
    CronScheduleNotFound,
    DeadlockError,
    InvalidJobData,
    InvalidProgress,
    JobError,
    JobFailed,
    JobLoadError,
    JobNotFound,
    JobTimeout,
    NoSupervisor,
    RedisAuthFailed,
    RedisFull,
    RedisPermissionDenied,
    RedisReadOnly,
    RedisRefused,
    RedisTLSFailed,
    RedisUnavailable,
    RedisWrongServer,
    SandboxRunnerError,
    UnknownJob,
    WaitTimeout,
)
from .job_control import JobInfo, JobProgress
from .registry import register_job
from .worker import Worker, init_worker

__all__ = [
    "ConfigError",
    "CronScheduleNotFound",
    "DeadlockError",
    "InvalidJobData",
    "InvalidProgress",
    "JobError",
    "JobFailed",
    "JobHandle",
    "JobInfo",
    "JobLoadError",
    "JobNotFound",
    "JobProgress",
    "JobTimeout",
    "NoSupervisor",
    "RedisAuthFailed",
    "RedisFull",
    "RedisPermissionDenied",
    "RedisReadOnly",
    "RedisRefused",
    "RedisTLSFailed",
    "RedisWrongServer",
    "RedisUnavailable",
    "SandboxRunnerError",
    "UnknownJob",
    "WaitTimeout",
    "Worker",
    "aget_job",
    "arun_job",
    "enqueue",
    "get_job",
    "get_result",
    "init_worker",
    "register_job",
    "run_job",
]
