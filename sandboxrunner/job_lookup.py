"""Finding a job by what a person types: its full id (``Q-KEY`` too, for an idempotency
key) or the start of one, such as the 8 hex digits `top` shows (with or without the
``default-``/``priority-`` queue part). The CLI (`logs`, `result`, `job`, `cancel`,
`retry`, `delete`) and the web dashboard's job pages and lookup box all find jobs here.

A start is looked up among the ids Redis lists anyway (`Store.listed_job_ids`: running,
waiting, retrying, recent and failed jobs), in two round trips and never by scanning keys;
it must match exactly one.
"""

from __future__ import annotations

import re

from . import errors
from .calls import JOB_KEY_PATTERN
from .config import redact_url
from .keys import QUEUES
from .store import Store

CANDIDATES_SHOWN = 5
FULL_ID = re.compile(rf"^({'|'.join(QUEUES)})-[0-9a-f]{{32}}$")
ID_START = re.compile(rf"^(?:({'|'.join(QUEUES)})-)?([0-9a-f]+)$")
KEYED_ID = re.compile(rf"^({'|'.join(QUEUES)})-{JOB_KEY_PATTERN.pattern}$")


def resolve_job_id(store: Store, given: str) -> str:
    """The full id GIVEN names; JobNotFound (one line) when it names none or several."""
    given = given.strip()
    if FULL_ID.match(given):
        return given
    shape = ID_START.match(given)
    keyed = KEYED_ID.match(given)  # an idempotency key's id: enqueue(..., job_id=KEY)
    if keyed and (not shape or store.job_fields(given, "status")[0]):
        return given
    if not shape:
        raise errors.JobNotFound(
            f"{given!r} is not a job id or the start of one (`queue-` and 32 hex digits, "
            f"or their first hex digits as `top` shows them); pass the full id "
            f"(`sandboxrunner top --json` lists it)")
    queue, digits = shape.groups()
    queues = (queue,) if queue else QUEUES
    matches = sorted(i for i in store.listed_job_ids(queues)
                     if i.partition("-")[2].startswith(digits))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise errors.JobNotFound(
            f"no job id starts with {given!r} among the running, waiting, retrying, recent "
            f"and failed jobs of queue{'s' if len(queues) > 1 else ''} {', '.join(queues)} "
            f"(the last "
            f"{store.config.history_size} settled of each) in Redis at "
            f"{redact_url(store.url)}; pass the full id")
    more = len(matches) - CANDIDATES_SHOWN
    shown = ", ".join(matches[:CANDIDATES_SHOWN]) + (f" and {more} more" if more > 0 else "")
    raise errors.JobNotFound(f"{given!r} is the start of {len(matches)} job ids: {shown}; "
                             f"give more of the id")
