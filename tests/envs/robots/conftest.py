"""Fixtures for the real-robot tests: a Piper CAN double and a franky-sim server."""
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


@pytest.fixture(scope="module")
def franky_sim():
    pytest.importorskip("franky", reason="needs the [robots] extra (franky-control)")
    pytest.importorskip("franky_sim", reason="needs franky-sim (test dependency of the Franka tests)")
    from franky_sim_server import start_franky_sim, stop_franky_sim

    host, proc = start_franky_sim()
    yield host
    stop_franky_sim(proc)
