"""Processes that yield the CPU on one machine: per-thread niceness raised for a whole process, or
a whole process on idle time only.

On a robot PC that also trains, the arm's control loop (the actor process: env, cameras, the
policy's trunk) and the learner share the cores. Once the actor process runs, the learner raises
its own niceness: the kernel then gives the actor a core first whenever both want one, and the
learner still takes all the time the actor leaves (issue 13; docs/distributed.md has the timing).
Raising niceness needs no privilege; taking it back does, so it is done once, for good. A process
whose work can wait (the background evaluation) runs on idle time only: Linux ``SCHED_IDLE``.
"""
from __future__ import annotations

import os


def _threads() -> list[int]:
    """This process's thread ids (``[0]``, the process as a whole, without procfs)."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except FileNotFoundError:
        return [0]


def raise_process_niceness(niceness: int) -> int:
    """Sets every thread of this process to at least ``niceness`` (0-19; Linux niceness is per
    thread, and threads started later inherit their creator's). Returns the main thread's
    niceness afterwards. Threads that are already nicer keep their niceness."""
    if not 0 <= niceness <= 19:
        raise ValueError(f"niceness {niceness} is outside [0, 19]")
    for tid in _threads():
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except ProcessLookupError:  # the thread ended meanwhile
            pass
    return os.getpriority(os.PRIO_PROCESS, 0)


def run_process_on_idle_time() -> str:
    """Puts every thread of this process (and the threads it starts later) under Linux
    ``SCHED_IDLE``: it runs only on CPU time no other process wants, and a waking process takes the
    core from it at once. Needs no privilege, and is not undone. Where the policy is missing (not
    Linux) or refused, the process takes niceness 19 instead. Returns what it got: ``"SCHED_IDLE"``
    or ``"niceness 19"``."""
    try:
        for tid in _threads():
            try:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            except ProcessLookupError:  # the thread ended meanwhile
                pass
        return "SCHED_IDLE"
    except (AttributeError, OSError):  # no os.SCHED_IDLE, or the kernel refused it
        return f"niceness {raise_process_niceness(19)}"
