"""Start and stop ``franky-sim`` (a MuJoCo Franka speaking the libfranka protocol) for tests and benchmarks."""
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, log, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"franky-sim exited with code {proc.returncode} before opening {host}:{port}:\n"
                               f"{log.read().decode(errors='replace')[-2000:]}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"franky-sim did not open {host}:{port} within {timeout_s} s")


def start_franky_sim() -> tuple[str, subprocess.Popen]:
    """Start ``franky-sim -s mujoco`` on a random 127.x loopback address (parallel runs do not collide)."""
    host = f"127.{os.getpid() % 200 + 20}.{uuid.uuid4().int % 250 + 1}.{uuid.uuid4().int % 250 + 1}"
    # A file, not a pipe, for its output: nobody reads a pipe while it runs, and a full pipe blocks it.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "franky_sim.run_server", "-s", "mujoco", "--hostname", host],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        _wait_for_port(host, 1337, proc, log)
    except Exception:
        proc.kill()
        raise
    return host, proc


def stop_franky_sim(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=10)
