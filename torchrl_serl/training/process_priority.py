"""The learner yields the CPU to the actor on one machine: per-thread niceness, raised for a whole process.

On a robot PC that also trains, the arm's control loop (the actor process: env, cameras, the
policy's trunk) and the learner share the cores. Once the actor process runs, the learner raises
its own niceness: the kernel then gives the actor a core first whenever both want one, and the
learner still takes all the time the actor leaves (issue 13; docs/distributed.md has the timing).
Raising niceness needs no privilege; taking it back does, so it is done once, for good.
"""
from __future__ import annotations

import os


def raise_process_niceness(niceness: int) -> int:
    """Sets every thread of this process to at least ``niceness`` (0-19; Linux niceness is per
    thread, and threads started later inherit their creator's). Returns the main thread's
    niceness afterwards. Threads that are already nicer keep their niceness."""
    if not 0 <= niceness <= 19:
        raise ValueError(f"niceness {niceness} is outside [0, 19]")
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except FileNotFoundError:  # no procfs (not Linux): the process as a whole
        threads = [0]
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except ProcessLookupError:  # the thread ended meanwhile
            pass
    return os.getpriority(os.PRIO_PROCESS, 0)
