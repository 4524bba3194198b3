"""Loading the Piper from a MuJoCo Menagerie checkout instead of the built-in model."""

import os

import mujoco
import numpy as np
import pytest
from torchrl.envs.utils import check_env_specs

from torchrl_serl.envs import PiperPickCubeEnv, ScriptedPickPolicy
from torchrl_serl.envs.sim.piper import PIPER_TCP_QUAT, PiperSimArm, add_piper
from torchrl_serl.envs.sim.scene import build_scene

# Menagerie's agilex_piper/piper.xml in miniature: its names, classes, joint axes and ranges, body
# offsets, finger equality, actuators, keyframe and spotlight, with capsules and boxes for meshes.
_PIPER_XML = """
<mujoco model="piper_description">
  <compiler angle="radian"/>
  <option integrator="implicitfast" cone="elliptic" impratio="10"/>
  <default>
    <default class="piper">
      <joint frictionloss="0.3" armature="0.005"/>
      <position inheritrange="1" forcerange="-100 100"/>
      <default class="finger">
        <joint frictionloss="0" type="slide"/>
        <position forcerange="-10 10"/>
      </default>
      <default class="collision">
        <geom group="3" type="capsule" size="0.03"/>
      </default>
    </default>
  </default>
  <worldbody>
    <light name="spotlight" mode="targetbodycom" target="link8" pos="0 0 1"/>
    <body name="base_link" childclass="piper" gravcomp="1">
      <inertial pos="-0.01 0 0.041" mass="0.163" diaginertia="2.7e-4 2.3e-4 2.2e-4"/>
      <geom class="collision" fromto="0 0 0.02 0 0 0.06" size="0.04"/>
      <body name="link1" pos="0 0 0.123" quat="0.707105 0 0 -0.707108" gravcomp="1">
        <inertial pos="0.0013 0.0003 -0.0092" mass="0.098" diaginertia="9.3e-5 8.3e-5 7.7e-5"/>
        <joint name="joint1" axis="0 0 1" range="-2.618 2.618"/>
        <body name="link2" quat="0.499998 0.5 -0.500002 -0.5" gravcomp="1">
          <inertial pos="0.149 -0.0024 0.0018" mass="0.291" diaginertia="1.8e-3 1.7e-3 1.5e-4"/>
          <joint name="joint2" axis="0 0 1" range="0 3.14"/>
          <geom class="collision" fromto="0.06 0 0 0.25 0.02 0"/>
          <body name="link3" pos="0.28358 0.028726 0" quat="0.998726 0 0 0.0504536" gravcomp="1">
            <inertial pos="-0.1 0.035 0.0005" mass="0.291" diaginertia="2.4e-4 2.2e-4 1e-4"/>
            <joint name="joint3" axis="0 0 1" range="-2.697 0"/>
            <geom class="collision" fromto="-0.03 0.01 0 -0.2 0.06 0" size="0.025"/>
            <body name="link4" pos="-0.24221 0.068514 0" quat="0.544767 -0.544769 -0.450809 0.450808"
                  gravcomp="1">
              <inertial pos="0.0003 -0.001 -0.0047" mass="0.127" diaginertia="4.9e-5 4.1e-5 3.8e-5"/>
              <joint name="joint4" axis="0 0 1" range="-1.832 1.832"/>
              <body name="link5" quat="0.707105 0.707108 0 0" gravcomp="1">
                <inertial pos="0.0001 0.057 -0.002" mass="0.145" diaginertia="0.001 0.001 0.001"/>
                <joint name="joint5" axis="0 0 1" range="-1.22 1.22"/>
                <body name="link6" pos="0 0.091 0.0014165" quat="0 0 -0.707105 -0.707108" gravcomp="1">
                  <inertial pos="0.001 0.012 0.032" mass="1.2" diaginertia="0.001 0.001 0.001"/>
                  <joint name="joint6" axis="0 0 1" range="-3.14 3.14"/>
                  <geom class="collision" type="box" size="0.03 0.04 0.03" pos="0 0 0.04"/>
                  <body name="link7" pos="0 0 0.13503" quat="1.89468e-08 1.89469e-08 0.707108 0.707105"
                        gravcomp="1">
                    <inertial pos="0 -0.047 -0.0092" mass="0.0265" diaginertia="0.001 0.001 0.001"/>
                    <joint name="joint7" axis="0 0 -1" class="finger" range="0 0.035"/>
                    <geom class="collision" type="box" size=".012 .015 .0025" pos="0 -0.015 -0.0025"/>
                    <geom class="collision" type="box" size=".015 .015 .0025" pos="0 -0.045 -0.0025"/>
                  </body>
                  <body name="link8" pos="0 0 0.13503" quat="1.89468e-08 -1.89469e-08 -0.707108 0.707105"
                        gravcomp="1">
                    <inertial pos="0 0.047 -0.0092" mass="0.0265" diaginertia="0.001 0.001 0.001"/>
                    <joint name="joint8" axis="0 0 1" class="finger" range="-0.035 0"/>
                    <geom class="collision" type="box" size=".012 .015 .0025" pos="0 0.015 -0.0025"/>
                    <geom class="collision" type="box" size=".015 .015 .0025" pos="0 0.045 -0.0025"/>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
  <contact>
    <exclude body1="base_link" body2="link1"/>
  </contact>
  <equality>
    <joint joint1="joint8" joint2="joint7" polycoef="0 -1 0 0 0"/>
  </equality>
  <actuator>
    <position name="joint1" joint="joint1" class="piper" kp="80" kv="5"/>
    <position name="joint2" joint="joint2" class="piper" kp="80" kv="5"/>
    <position name="joint3" joint="joint3" class="piper" kp="80" kv="5"/>
    <position name="joint4" joint="joint4" class="piper" kp="40" kv="5"/>
    <position name="joint5" joint="joint5" class="piper" kp="10" kv="1.5"/>
    <position name="joint6" joint="joint6" class="piper" kp="10" kv="1.5"/>
    <position name="gripper" joint="joint7" class="finger" kp="40" kv="5"/>
  </actuator>
  <keyframe>
    <key name="home" qpos="0 1.57 -1.3485 0 0 0 0 0" ctrl="0 1.57 -1.3485 0 0 0 0"/>
  </keyframe>
</mujoco>
"""
MENAGERIE_Q_MIN = np.array([-2.618, 0.0, -2.697, -1.832, -1.22, -3.14])
MENAGERIE_Q_MAX = np.array([2.618, 3.14, 0.0, 1.832, 1.22, 3.14])


@pytest.fixture
def checkout(tmp_path):
    """A checkout laid out like Menagerie, holding only ``agilex_piper/piper.xml``."""
    (tmp_path / "agilex_piper").mkdir()
    (tmp_path / "agilex_piper" / "piper.xml").write_text(_PIPER_XML)
    return str(tmp_path)


def _compile(menagerie):
    spec = build_scene(lambda world, s: add_piper(world, s, menagerie=menagerie), physics_dt=0.002,
                       front_camera_pos=(1, 0, 0.5), front_camera_target=(0.3, 0, 0))
    model = spec.compile()
    return model, mujoco.MjData(model)


def test_checkout_is_attached_with_the_task_actuators(checkout):
    env = PiperPickCubeEnv(menagerie_root=checkout, seed=0)
    model = env.model
    # the file's actuators, keyframe and spotlight are replaced by the task's
    names = {model.actuator(i).name for i in range(model.nu)}
    assert names == {f"piper/servo{i}" for i in range(1, 7)} | {"piper/gripper"}
    assert model.nkey == 0 and model.nlight == 2
    # servo and IK limits are Menagerie's joint limits
    limits = [MENAGERIE_Q_MIN, MENAGERIE_Q_MAX]
    np.testing.assert_allclose(model.actuator_ctrlrange[env.arm.act_ids].T, limits)
    np.testing.assert_allclose([env.arm.ik.q_low, env.arm.ik.q_high], limits)
    check_env_specs(env)


def test_task_frames_sit_on_the_flange_as_on_the_built_in_model(checkout):
    built_in, d_built_in = _compile(None)
    menagerie, d_menagerie = _compile(checkout)
    for model in (built_in, menagerie):
        link6 = model.body("piper/link6").id
        assert model.site("piper/tcp").bodyid[0] == link6 == model.camera("wrist").bodyid[0]
    np.testing.assert_array_equal(built_in.site("piper/tcp").pos, menagerie.site("piper/tcp").pos)
    np.testing.assert_array_equal(built_in.camera("wrist").pos, menagerie.camera("wrist").pos)
    np.testing.assert_array_equal(built_in.camera("wrist").quat, menagerie.camera("wrist").quat)
    # Same joint zeros and axes as the SDK table: the TCP orientation agrees for any posture. The
    # URDF places the elbow 2 deg (~1 cm) off the firmware-offset table, hence the position slack.
    rng = np.random.default_rng(0)
    for q in [np.zeros(6), *rng.uniform(MENAGERIE_Q_MIN, MENAGERIE_Q_MAX, size=(5, 6))]:
        for model, data in ((built_in, d_built_in), (menagerie, d_menagerie)):
            data.qpos[[model.joint(f"piper/joint{i}").qposadr[0] for i in range(1, 7)]] = q
            mujoco.mj_kinematics(model, data)
        tcp, tcp_built_in = d_menagerie.site("piper/tcp"), d_built_in.site("piper/tcp")
        np.testing.assert_allclose(tcp.xmat, tcp_built_in.xmat, atol=1e-4)  # 6-digit quaternions
        np.testing.assert_allclose(tcp.xpos, tcp_built_in.xpos, atol=0.015)


def test_gripper_command_maps_onto_the_mirrored_finger_joints(checkout):
    env = PiperPickCubeEnv(menagerie_root=checkout, seed=0)
    env.reset()
    fingers = env.arm.finger_qpos_ids
    np.testing.assert_allclose(env.data.qpos[fingers], [0.035, -0.035])  # 0.07 m opening
    env.arm.set_gripper(env.data, 1.0)  # nothing between the fingers: they close fully
    env.arm.advance(env.data, env.tcp_target, 5 * env.n_substeps)
    np.testing.assert_allclose(env.data.qpos[fingers], [0.0, 0.0], atol=2e-3)
    env.arm.set_gripper(env.data, 0.5)
    env.arm.advance(env.data, env.tcp_target, 5 * env.n_substeps)
    np.testing.assert_allclose(env.data.qpos[fingers], [0.0175, -0.0175], atol=2e-3)


def test_ik_reaches_the_grasp_region_within_menagerie_limits(checkout):
    model, _ = _compile(checkout)
    arm = PiperSimArm(menagerie_root=checkout)
    arm.bind(model)
    xy_lo, xy_hi = np.array(arm.layout.block_xy_low), np.array(arm.layout.block_xy_high)
    # up to the success height; Menagerie's +-70 deg joint 5 (built-in: +-75) leaves the box's top
    # corners nearest the base a few mm short of the tilted TCP orientation
    for x in np.linspace(xy_lo[0], xy_hi[0], 3):
        for y in np.linspace(xy_lo[1], xy_hi[1], 3):
            for z in (0.02, 0.15):
                target = np.array([x, y, z])
                q = arm.ik.solve(arm.home, target, PIPER_TCP_QUAT)
                assert np.all(q >= MENAGERIE_Q_MIN) and np.all(q <= MENAGERIE_Q_MAX)
                assert np.abs(arm.ik.error(q, target, PIPER_TCP_QUAT)).max() < 2e-3, target


def test_scripted_policy_lifts_the_cube(checkout):
    env = PiperPickCubeEnv(menagerie_root=checkout)
    for seed in (0, 1):
        env.set_seed(seed)
        td = env.rollout(40, ScriptedPickPolicy())
        assert td["next", "success"].any(), seed


def test_checkout_without_the_piper_names_the_variable_and_the_file(tmp_path):
    (tmp_path / "franka_emika_panda").mkdir()
    with pytest.raises(FileNotFoundError, match=r"MENAGERIE_ROOT.*agilex_piper/piper\.xml"):
        PiperPickCubeEnv(menagerie_root=str(tmp_path))


@pytest.mark.skipif(not os.path.isfile(os.path.join(os.environ.get("MENAGERIE_ROOT", "/nonexistent"),
                                                    "agilex_piper", "piper.xml")),
                    reason="needs a MuJoCo Menagerie checkout in $MENAGERIE_ROOT")
def test_real_menagerie_piper_picks_the_cube():
    env = PiperPickCubeEnv(menagerie_root=os.environ["MENAGERIE_ROOT"], seed=1)
    check_env_specs(env)
    td = env.rollout(60, ScriptedPickPolicy())
    assert td["next", "success"].any()
