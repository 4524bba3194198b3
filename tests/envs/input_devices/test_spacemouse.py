"""SpaceMouse as an intervention source: raw HID reports through pyspacemouse's parser, driving the sim."""

import struct
import time

import pytest
import torch
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_serl.envs.input_devices.spacemouse import SpaceMouseSource
from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv
from torchrl_serl.envs.transforms.intervention import Intervention


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
