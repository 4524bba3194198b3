"""The learner's niceness: every thread of its process, and the threads it starts later."""
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
