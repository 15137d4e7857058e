"""sandboxrunner: background jobs for Python on Redis.

Public API: run_job, arun_job, enqueue, get_result, register_job, init_worker, pause,
resume (apause, aresume), and the errors.
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
    UnknownQueue,
    WaitTimeout,
)
from .queue_control import apause, aresume, pause, resume
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
    "UnknownQueue",
    "WaitTimeout",
    "Worker",
    "apause",
    "aresume",
    "arun_job",
    "enqueue",
    "get_result",
    "init_worker",
    "pause",
    "register_job",
    "resume",
    "run_job",
]
