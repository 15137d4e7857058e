"""sandboxrunner: background jobs for Python on Redis.

Public API: run_job, arun_job, enqueue, get_result, register_job, init_worker, and the errors.
"""

from .client import JobHandle, arun_job, enqueue, get_result, run_job
from .errors import (
    ConfigError,
    CronScheduleNotFound,
    DeadlockError,
    InvalidJobData,
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
from .registry import register_job
from .worker import Worker, init_worker

__all__ = [
    "ConfigError",
    "CronScheduleNotFound",
    "DeadlockError",
    "InvalidJobData",
    "JobError",
    "JobFailed",
    "JobHandle",
    "JobLoadError",
    "JobNotFound",
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
    "arun_job",
    "enqueue",
    "get_result",
    "init_worker",
    "register_job",
    "run_job",
]
