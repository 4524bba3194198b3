"""The learner's niceness and the evaluator's idle time: every thread of the process, and the threads it starts later."""
import os
import subprocess
import sys
import textwrap

import pytest

from torchrl_serl.training.process_priority import raise_process_niceness


def test_every_thread_and_later_ones_take_the_niceness(tmp_path):
    # in a child process: niceness cannot be lowered again without privilege
    script = textwrap.dedent("""
        import os, threading
        from torchrl_serl.training.process_priority import raise_process_niceness
        want = max(os.getpriority(os.PRIO_PROCESS, 0), 7)  # a test run may itself be niced
        release = threading.Event()
        early = threading.Thread(target=release.wait)
        early.start()
        assert raise_process_niceness(7) == want
        late = threading.Thread(target=release.wait)
        late.start()
        tids = [int(t) for t in os.listdir("/proc/self/task")]
        print(len(tids), sorted({os.getpriority(os.PRIO_PROCESS, t) - want for t in tids}))
        assert raise_process_niceness(3) == want  # never lowered
        release.set()
    """)
    out = tmp_path / "out.txt"
    with out.open("w") as f:
        done = subprocess.run([sys.executable, "-c", script], stdout=f, stderr=subprocess.STDOUT, timeout=120)
    text = out.read_text()
    assert done.returncode == 0, text
    threads, niceness = text.split(maxsplit=1)
    assert int(threads) >= 3 and niceness.strip() == "[0]", text


@pytest.mark.parametrize("niceness", [-1, 20])
def test_out_of_range_niceness_is_refused(niceness):
    with pytest.raises(ValueError, match="outside"):
        raise_process_niceness(niceness)
    assert os.getpriority(os.PRIO_PROCESS, 0) >= 0


def test_idle_time_covers_every_thread_and_later_ones(tmp_path):
    # in a child process: a thread cannot leave SCHED_IDLE again without privilege
    script = textwrap.dedent("""
        import os, threading
        from torchrl_serl.training.process_priority import run_process_on_idle_time
        release = threading.Event()
        early = threading.Thread(target=release.wait)
        early.start()
        got = run_process_on_idle_time()
        late = threading.Thread(target=release.wait)
        late.start()
        tids = [int(t) for t in os.listdir("/proc/self/task")]
        print(got, len(tids), sorted({os.sched_getscheduler(t) == os.SCHED_IDLE for t in tids}))
        release.set()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(maxsplit=1)[0] == "SCHED_IDLE", done.stdout  # Linux: the policy, not the fallback
    threads, idle = done.stdout.split(maxsplit=1)[1].split(maxsplit=1)
    assert int(threads) >= 3 and idle.strip() == "[True]", done.stdout
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # this process is untouched
