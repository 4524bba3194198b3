"""Fixtures for the real-robot tests: a Piper CAN double and a franky-sim server."""
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest


@pytest.fixture
def can_channel():
    # piper-sdk keeps one interface object per channel name: a fresh name per test isolates them.
    return f"piper-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def piper_double(can_channel):
    pytest.importorskip("piper_sdk", reason="needs the [robots] extra (piper-sdk)")
    pytest.importorskip("can", reason="needs the [robots] extra (python-can)")
    from piper_double import PiperDouble

    double = PiperDouble(can_channel).start()
    yield double
    double.close()


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"franky-sim exited with code {proc.returncode} before opening {host}:{port}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"franky-sim did not open {host}:{port} within {timeout_s} s")


def start_franky_sim() -> tuple[str, subprocess.Popen]:
    """Start ``franky-sim -s mujoco`` on a random 127.x loopback address (parallel runs do not collide)."""
    host = f"127.{os.getpid() % 200 + 20}.{uuid.uuid4().int % 250 + 1}.{uuid.uuid4().int % 250 + 1}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "franky_sim.run_server", "-s", "mujoco", "--hostname", host],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        _wait_for_port(host, 1337, proc)
    except Exception:
        proc.kill()
        raise
    return host, proc


def stop_franky_sim(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def franky_sim():
    pytest.importorskip("franky", reason="needs the [robots] extra (franky-control)")
    pytest.importorskip("franky_sim", reason="needs franky-sim (test dependency of the Franka tests)")
    host, proc = start_franky_sim()
    yield host
    stop_franky_sim(proc)
