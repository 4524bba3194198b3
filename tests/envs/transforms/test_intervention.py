import os
import queue
import struct
import time

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from toy_arm_env import ToyArmEnv
from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv
from torchrl_serl.envs.transforms.intervention import Intervention
from torchrl_serl.envs.transforms.keyboard import KeyboardSource, TerminalKeyReader
from torchrl_serl.envs.transforms.spacemouse import SpaceMouseSource


class FakeHID:
    """The HID boundary of a SpaceMouse Wireless: raw 13-byte reports, non-blocking reads."""

    product_string, manufacturer_string, release_number, serial_number = "SpaceMouse Wireless", "3Dconnexion", 1, "0"

    def __init__(self):
        self.reports: list[bytes] = []

    def push_motion(self, x=0, y=0, z=0, pitch=0, roll=0, yaw=0):
        self.reports.append(b"\x01" + struct.pack("<6h", x, y, z, pitch, roll, yaw))

    def push_buttons(self, left=False, right=False):
        self.reports.append(bytes([3, int(left) | (int(right) << 1)]))

    def read(self, n):
        return self.reports.pop(0) if self.reports else b""

    def open(self):
        pass

    def close(self):
        pass


@pytest.fixture
def spacemouse():
    pyspacemouse = pytest.importorskip("pyspacemouse")  # the [robots] extra; CI installs it
    hid = FakeHID()
    device = pyspacemouse.SpaceMouseDevice(pyspacemouse.get_device_specs()["SpaceMouseWireless"], hid)
    device.open()
    return hid, SpaceMouseSource(device, axes=("x", "y", "z"), deadzone=0.05)


def test_spacemouse_reports_parsed_by_pyspacemouse(spacemouse):
    hid, source = spacemouse
    assert source.poll() is None  # nothing pressed
    hid.push_motion(x=100)
    hid.push_motion(x=350, y=-175)  # drained: only the latest puck position counts
    time.sleep(0.001)  # pyspacemouse stamps reports with a clock; keep stamps distinct
    torch.testing.assert_close(source.poll(), torch.tensor([1.0, 0.5, 0.0, 0.0]))  # Wireless spec flips y
    hid.push_buttons(left=True)
    torch.testing.assert_close(source.poll(), torch.tensor([1.0, 0.5, 0.0, 1.0]))  # close gripper
    hid.push_motion()
    time.sleep(0.001)
    hid.push_buttons(right=True)
    torch.testing.assert_close(source.poll(), torch.tensor([0.0, 0.0, 0.0, -1.0]))  # open, no motion
    hid.push_buttons()
    assert source.poll() is None
    hid.push_motion(x=10)  # 10/350 < deadzone
    assert source.poll() is None
    with pytest.raises(ValueError, match="unknown SpaceMouse axis"):
        SpaceMouseSource(object(), axes=("x", "y", "up"))


def test_spacemouse_intervention_drives_sim_and_is_recorded(spacemouse):
    hid, source = spacemouse
    env = TransformedEnv(PandaPickCubeEnv(seed=0), Intervention(source))
    check_env_specs(env)
    td = env.reset()
    x0 = env.base_env.tcp_pos()[0]
    steps = []
    for i in range(6):
        if i == 2:
            hid.push_motion(x=350)  # operator pushes the puck forward (+x) from step 2 on
        td.set("action", torch.zeros(4))  # the policy proposes to stay still
        out = env.step(td)
        steps.append(out.clone())
        td = out["next"]
    flags = [bool(s["next", "intervention"]) for s in steps]
    assert flags == [False, False, True, True, True, True]
    for s in steps[2:]:
        torch.testing.assert_close(s["action"], torch.tensor([1.0, 0, 0, 0]))  # executed action recorded
        torch.testing.assert_close(s["next", "policy_action"], torch.zeros(4))
    assert torch.equal(steps[0]["action"], torch.zeros(4))
    assert env.base_env.tcp_pos()[0] > x0 + 0.1  # the arm moved forward under human control
    env.close()


def test_keyboard_intervention_on_env_and_rollout():
    keys = queue.Queue()
    env = TransformedEnv(ToyArmEnv(), Intervention(KeyboardSource(keys, key_map={"w": (1, 0, 0, 0, 0, 0, 0), "c": (0,) * 6 + (1,)})))
    check_env_specs(env)

    calls = {"n": 0}

    def pressing_policy(td):
        # the operator presses "w" and "c" while the 2nd action is computed; "x" is not mapped
        calls["n"] += 1
        if calls["n"] == 2:
            for k in "wcx":
                keys.put(k)
        return td.set("action", torch.full((7,), -0.5))

    rollout = env.rollout(4, pressing_policy)
    assert rollout["next", "intervention"].squeeze(-1).tolist() == [False, True, False, False]
    torch.testing.assert_close(rollout["action"][1], torch.tensor([1.0, 0, 0, 0, 0, 0, 1]))
    torch.testing.assert_close(rollout["action"][2], torch.full((7,), -0.5))
    torch.testing.assert_close(rollout["next", "policy_action"][1], torch.full((7,), -0.5))


def test_terminal_key_reader_feeds_keyboard_source():
    keys = queue.Queue()
    read_fd, write_fd = os.pipe()
    with TerminalKeyReader(keys, fd=read_fd):
        os.write(write_fd, b"wr")
        deadline = time.time() + 5
        while keys.qsize() < 2 and time.time() < deadline:
            time.sleep(0.01)
    os.close(write_fd)
    os.close(read_fd)
    torch.testing.assert_close(KeyboardSource(keys).poll(), torch.tensor([1.0, 0, 1, 0]))


def test_bad_intervention_action_raises():
    class Wrong:
        def poll(self):
            return torch.tensor([float("nan"), 0, 0, 0])

    env = TransformedEnv(PandaPickCubeEnv(seed=0), Intervention(Wrong()))
    td = env.reset().set("action", torch.zeros(4))
    with pytest.raises(ValueError, match="finite with 4 entries"):
        env.step(td)
    env.close()
    with pytest.raises(ValueError, match="one length"):
        KeyboardSource(queue.Queue(), key_map={"w": (1, 0), "s": (1, 0, 0)})
