"""The code-built robot models follow the published kinematics and limits."""

import mujoco
import numpy as np
import pytest

from torchrl_serl.envs.sim.panda import PANDA_HOME, PANDA_Q_MAX, PANDA_Q_MIN, add_panda
from torchrl_serl.envs.sim.piper import PIPER_Q_MAX, PIPER_Q_MIN, PiperSimArm, add_piper
from torchrl_serl.envs.sim.scene import build_scene


def _compile(add):
    spec = build_scene(add, physics_dt=0.002, front_camera_pos=(1, 0, 0.5), front_camera_target=(0.3, 0, 0))
    model = spec.compile()
    return model, mujoco.MjData(model)


def test_panda_home_tcp_matches_franka_ready_pose():
    # Franka's "ready" posture puts the hand TCP at (0.307, 0, 0.487) m, pointing down.
    model, data = _compile(add_panda)
    qadr = [model.joint(f"panda/joint{i}").qposadr[0] for i in range(1, 8)]
    data.qpos[qadr] = PANDA_HOME
    mujoco.mj_kinematics(model, data)
    site = model.site("panda/tcp").id
    np.testing.assert_allclose(data.site_xpos[site], [0.307, 0.0, 0.487], atol=2e-3)
    np.testing.assert_allclose(data.site_xmat[site].reshape(3, 3)[:, 2], [0, 0, -1], atol=1e-3)


@pytest.mark.parametrize("add, prefix, lo, hi", [(add_panda, "panda/", PANDA_Q_MIN, PANDA_Q_MAX),
                                                 (add_piper, "piper/", PIPER_Q_MIN, PIPER_Q_MAX)])
def test_joint_limits_are_radians(add, prefix, lo, hi):
    model, _ = _compile(add)
    ranges = np.array([model.joint(f"{prefix}joint{i + 1}").range for i in range(len(lo))])
    np.testing.assert_allclose(ranges[:, 0], lo)
    np.testing.assert_allclose(ranges[:, 1], hi)


def test_gripper_strokes():
    for add, prefix, stroke in ((add_panda, "panda/", 0.04), (add_piper, "piper/", 0.035)):
        model, _ = _compile(add)
        for i in (1, 2):
            np.testing.assert_allclose(model.joint(f"{prefix}finger_joint{i}").range, [0, stroke])


def test_piper_forward_kinematics_matches_vendor_sdk():
    fk_module = pytest.importorskip("piper_sdk.kinematics.piper_fk")
    fk = fk_module.C_PiperForwardKinematics()
    model, data = _compile(add_piper)
    qadr = [model.joint(f"piper/joint{i}").qposadr[0] for i in range(1, 7)]
    rng = np.random.default_rng(0)
    for q in [np.zeros(6), *rng.uniform(PIPER_Q_MIN, PIPER_Q_MAX, size=(5, 6))]:
        data.qpos[qadr] = q
        mujoco.mj_kinematics(model, data)
        sdk_xyz_mm = fk.CalFK(list(q))[5][:3]
        np.testing.assert_allclose(data.site("piper/flange").xpos * 1000, sdk_xyz_mm, atol=1e-6)


def test_piper_ik_reaches_the_whole_task_box():
    model, _ = _compile(add_piper)
    arm = PiperSimArm()
    arm.bind(model)
    from torchrl_serl.envs.sim.piper import PIPER_HOME, PIPER_TCP_QUAT

    lo, hi = np.array(arm.layout.cartesian_low), np.array(arm.layout.cartesian_high)
    # the part of the box a grasp and lift uses: above the cube sampling area, up to the lift height
    xy_lo, xy_hi = np.array(arm.layout.block_xy_low), np.array(arm.layout.block_xy_high)
    for x in np.linspace(xy_lo[0], xy_hi[0], 3):
        for y in np.linspace(xy_lo[1], xy_hi[1], 3):
            for z in (0.02, 0.15, hi[2]):
                target = np.array([x, y, z])
                q = arm.ik.solve(PIPER_HOME, target, PIPER_TCP_QUAT)
                assert np.all(q >= PIPER_Q_MIN) and np.all(q <= PIPER_Q_MAX)
                err = arm.ik.error(q, target, PIPER_TCP_QUAT)
                assert np.abs(err).max() < 2e-3, (target, err)
    assert lo[2] == 0.0


def test_piper_ik_unreachable_target_gives_closest_posture_within_limits():
    from torchrl_serl.envs.sim.piper import PIPER_HOME, PIPER_TCP_QUAT

    model, _ = _compile(add_piper)
    arm = PiperSimArm()
    arm.bind(model)
    far = np.array([1.5, 0.0, 0.2])  # beyond the 0.63 m reach
    q = arm.ik.solve(PIPER_HOME, far, PIPER_TCP_QUAT)
    assert np.all(q >= PIPER_Q_MIN) and np.all(q <= PIPER_Q_MAX)
    start_err = np.linalg.norm(arm.ik.error(PIPER_HOME, far, PIPER_TCP_QUAT))
    assert np.linalg.norm(arm.ik.error(q, far, PIPER_TCP_QUAT)) < start_err
