"""Executors: where a supervisor's jobs run. Thread mode is threads.py; process mode is
the rest, across three kinds of process (the ``in_`` modules run in the other two):

  supervisor (threads)                fork server (1 thread)        children
  --------------------                ----------------------        --------
  processes.py  ProcessExecutor       in_forkserver.py              in_child.py
    backlog, RUN frames                 holds the jobs imported,      one job at a
  pool.py  ChildPool, one per queue     forks on request, reaps       time, in its own
    manager thread: pipes, pidfds,      on request                    session
    deadlines, kills, memory
  forkserver.py  ForkServer           <- SPAWN [queue, slot]
    sr-forkserver thread:                + 3 pipe ends (SCM_RIGHTS) --> fork() -----+
    starts, watches, restarts         -> SPAWNED [pid]                              |
                                      <- REAP [pid] (after the kill)                |
                                      -> REAPED [pid, status]                       |
                                         (one SOCK_SEQPACKET pair, pipes.py)        v
  pool --- RUN (ClaimedJob, spec?) --- command pipe ------------------------->  child
  pool <-- READY, LOG, DONE ---------- message pipe --------------------------  child
  pool <-- fd 1/2 bytes -------------- output pipe ---------------------------  child
  pool <-- exit ---------------------- pidfd (pidfd_open works on any pid) ---  child
  pools and children share the nested-call counters: a memfd (context.SlotCounters)

Why a fork server: forking the threaded supervisor copies every lock another thread
holds at that moment, held for ever in the child (CPython 3.12+ warns). The fork server
is started before any thread of ours and runs none, so no child comes from a threaded
process; the hot path does not pass through it (RUN and DONE go straight between pool
and child), only the start and the end of a child do.

Design choices, and why:
- One fork server per supervisor, one socket for all its pools: it forks one child at a
  time anyway, and a request with its answer holds the socket's lock (~1 ms for a fork).
- Started by fork when the process runs one thread (`sandboxrunner start` builds the
  supervisor before any thread: cheap, nothing imported twice), by spawning a fresh
  interpreter otherwise (an app's init_worker runs among the app's threads; and every
  restart): it re-imports the job files and unpickles the supervisor's specs, so jobs
  registered with register_job come along. A job that cannot be pickled there, or is
  registered after the start, travels with its RUN frame, once per child, as before.
- The pool creates a child's pipes and sends the child's ends with SPAWN, so the fork
  server never holds another child's pipe and a child holds nothing but its own. The
  supervisor opens each child's pidfd itself. The fork server reaps a child only when
  the pool asks, after it killed the child's process group: until then the child's pid
  and group id cannot be a stranger's.
- Lifetimes: a child has PR_SET_PDEATHSIG tied to the fork server (its only thread); the
  fork server has its own tied to the supervisor's thread that started it (the main
  thread, or sr-forkserver, which lives as long as the supervisor), and exits at EOF on
  its socket. So SIGKILL of the supervisor takes the fork server and every child. The
  fork server has its own session: Ctrl-C reaches the supervisor, which drains first.
- When the fork server dies, its children die with it: their jobs fail as crashed,
  naming it, not counted as a crash loop; sr-forkserver reaps it, logs an error and
  spawns a new one (backing off if they keep dying); the pools are woken to refill.
- rlimits, titles and the client for a nested run_job are set in each child after the
  fork, as before; the OpenSSL fork guard is gone (no fork happens in a threaded process).
- A job file that starts a thread when imported makes the supervisor threaded before the
  fork server starts (so it is spawned), and starts that thread in the fork server too:
  such a job file's children come from a threaded process after all. Start threads in
  the job, not at import.
"""
