"""Franka Emika Panda + Franka Hand built in code from the published kinematics.

Kinematics: Franka's modified-DH table (docs "Robot and interface specifications").
Inertials: the community-identified values used by MuJoCo Menagerie / SERL's franka_sim.
Joint armature 0.1 and damping 1.0 as in franka_sim. Collision shapes are capsules/boxes.
"""

from __future__ import annotations

import numpy as np
import mujoco

from torchrl_serl.envs.sim.arm import SimArm, TaskLayout
from torchrl_serl.envs.sim.menagerie import attach_menagerie_model
from torchrl_serl.envs.sim.dh import ARM_CONAFFINITY, ARM_CONTYPE, DHLink, add_dh_chain, axis_quat
from torchrl_serl.envs.sim.opspace import NativeOSCLoop, OpSpaceController, native_osc_library

PANDA_HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
PANDA_Q_MIN = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
PANDA_Q_MAX = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
PANDA_TORQUE_LIMIT = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])  # N m
PANDA_FINGER_STROKE_M = 0.04  # per finger; 0.08 m total opening
PANDA_FLANGE_M = 0.107
PANDA_TCP_FROM_HAND_M = 0.1034
_PI2 = np.pi / 2

_LINKS = [
    # a, alpha, d, offset, mass, com, fullinertia (Menagerie)
    (0.0, 0.0, 0.333, 4.970684, (0.003875, 0.002081, -0.04762),
     (0.70337, 0.70661, 0.009117, -0.000139, 0.006772, 0.019169)),
    (0.0, -_PI2, 0.0, 0.646926, (-0.003141, -0.02872, 0.003495),
     (0.007962, 0.02811, 0.025995, -0.003925, 0.010254, 0.000704)),
    (0.0, _PI2, 0.316, 3.228604, (0.027518, 0.039252, -0.066502),
     (0.037242, 0.036155, 0.01083, -0.004761, -0.011396, -0.012805)),
    (0.0825, _PI2, 0.0, 3.587895, (-0.05317, 0.104419, 0.027454),
     (0.025853, 0.019552, 0.028323, 0.007796, -0.001332, 0.008641)),
    (-0.0825, -_PI2, 0.384, 1.225946, (-0.011953, 0.041065, -0.038437),
     (0.035549, 0.029474, 0.008627, -0.002117, -0.004037, 0.000229)),
    (0.0, _PI2, 0.0, 1.666555, (0.060149, -0.014117, -0.010517),
     (0.001964, 0.004354, 0.005433, 0.000109, -0.001158, 0.000341)),
    (0.088, _PI2, 0.0, 0.735522, (0.010517, -0.004252, 0.061597),
     (0.012516, 0.010027, 0.004815, -0.000428, -0.001196, -0.000741)),
]
_RADII = (0.06, 0.06, 0.055, 0.055, 0.05, 0.045, 0.04)

PANDA_LINKS = tuple(
    DHLink(a, alpha, d, 0.0, (lo, hi), m, com, inertia, r)
    for (a, alpha, d, m, com, inertia), lo, hi, r in zip(_LINKS, PANDA_Q_MIN, PANDA_Q_MAX, _RADII)
)


# SERL franka_sim's PandaPickCube geometry.
PANDA_LAYOUT = TaskLayout(
    cartesian_low=(0.2, -0.3, 0.0),
    cartesian_high=(0.6, 0.3, 0.5),
    block_xy_low=(0.25, -0.25),
    block_xy_high=(0.55, 0.25),
    front_camera_pos=(1.3, -0.5, 0.8),
    front_camera_target=(0.35, 0.0, 0.2),
)


# serl_franka_controllers' Cartesian impedance defaults (the controller SERL runs on the real arm).
IMPEDANCE_TRANS_STIFFNESS, IMPEDANCE_TRANS_DAMPING = 2000.0, 89.0  # N/m, N s/m
IMPEDANCE_ROT_STIFFNESS, IMPEDANCE_ROT_DAMPING = 150.0, 7.0  # N m/rad, N m s/rad
# the real controller clips the pose error (~1-2 cm); a force clamp has the same effect
IMPEDANCE_MAX_FORCE = 60.0  # N
# TCP pointing down, fingers along world y: RotX(pi)
PANDA_TCP_QUAT = np.array([0.0, 1.0, 0.0, 0.0])
CONTROLLERS = ("osc", "impedance")


class PandaSimArm(SimArm):
    """Panda with one of two end-effector controllers, both holding the TCP pointing down:

    - ``"osc"`` (default, SERL franka_sim): operational-space torque control recomputed in Python
      every physics step (:class:`OpSpaceController`, nullspace pull to home, gravity compensation).
      ``osc_kwargs`` go to the controller. The substep loop runs in C (``_osc_native.c``, compiled
      on first use; same algebra) when a C compiler is found, unless ``TORCHRL_SERL_NATIVE_OSC=0``.
    - ``"impedance"``: a Cartesian spring-damper (stiffness/damping of serl_franka_controllers, the
      controller SERL runs on the real arm) built from MuJoCo site actuators, with MuJoCo gravity
      compensation and weak joint springs to home; it runs inside ``mj_step`` (no Python per
      physics step), several times cheaper than ``"osc"``.

    ``menagerie_root``: path of a MuJoCo Menagerie checkout; the arm and hand then come from its
    ``franka_emika_panda/panda.xml`` (meshes, identified inertias) instead of the built-in model.
    """

    tcp_site = "panda/tcp"
    layout = PANDA_LAYOUT

    def __init__(self, controller: str = "osc", menagerie_root: str | None = None, **osc_kwargs):
        if controller not in CONTROLLERS:
            raise ValueError(f"controller must be one of {CONTROLLERS}, got {controller!r}")
        if osc_kwargs and controller != "osc":
            raise ValueError(f"OSC gains {sorted(osc_kwargs)} only apply to controller='osc'")
        self.controller = controller
        self.menagerie_root = menagerie_root
        self.osc_kwargs = osc_kwargs

    def add_to(self, world, spec):
        add_panda(world, spec, impedance=self.controller == "impedance", menagerie=self.menagerie_root)

    def bind(self, model):
        self.model = model
        joints = [model.joint(f"panda/joint{i}") for i in range(1, 8)]
        self.qpos_ids = np.array([j.qposadr[0] for j in joints])
        self.dof_ids = np.array([j.dofadr[0] for j in joints])
        self.gripper_id = model.actuator("panda/gripper").id
        self.finger_qpos_ids = np.array(
            [model.joint(f"panda/finger_joint{i}").qposadr[0] for i in (1, 2)])
        if self.controller == "osc":
            self.act_ids = np.array([model.actuator(f"panda/actuator{i}").id for i in range(1, 8)])
            if not np.array_equal(self.act_ids, np.arange(self.act_ids[0], self.act_ids[0] + 7)):
                raise ValueError(f"arm actuators must be contiguous, got {self.act_ids.tolist()}")
            self.act_slice = slice(int(self.act_ids[0]), int(self.act_ids[0]) + 7)
            site = model.site(self.tcp_site).id
            self.osc = OpSpaceController(model, site, self.qpos_ids, self.dof_ids, **self.osc_kwargs)
            lib = native_osc_library()
            self.native_osc = NativeOSCLoop(lib, self.osc, self.act_slice) if lib is not None else None
        else:
            self.act_ids = np.array([model.actuator(f"panda/cartesian_{a}").id for a in "xyz"])

    def reset(self, data):
        data.qpos[self.qpos_ids] = PANDA_HOME
        data.qpos[self.finger_qpos_ids] = PANDA_FINGER_STROKE_M
        self.set_gripper(data, 0.0)

    def set_gripper(self, data, closure):
        data.ctrl[self.gripper_id] = PANDA_FINGER_STROKE_M * (1.0 - closure)

    def advance(self, data, tcp_target, n_substeps):
        m = self.model
        if self.controller == "impedance":
            data.ctrl[self.act_ids] = tcp_target
            mujoco.mj_step(m, data, nstep=n_substeps)
            return
        if self.native_osc is not None:
            self.native_osc.advance(data, tcp_target, PANDA_TCP_QUAT, PANDA_HOME, n_substeps)
            return
        osc, step = self.osc, mujoco.mj_step
        torques = data.ctrl[self.act_slice]  # the controller writes straight into ctrl
        for _ in range(n_substeps):
            osc(data, tcp_target, PANDA_TCP_QUAT, PANDA_HOME, out=torques)
            step(m, data)


def add_cartesian_impedance(world: mujoco.MjsBody, spec: mujoco.MjSpec, prefix: str,
                            tcp_quat: np.ndarray) -> None:
    """Six site actuators between the TCP and two world reference sites: three position servos
    on x, y, z (ctrl = TCP target in m, world frame) and three on the rotation vector from the
    fixed ``tcp_quat`` (ctrl 0). Forces act through the TCP Jacobian, as an impedance controller."""
    world.add_site(name=f"{prefix}position_ref", size=[0.001, 0, 0], group=5)
    world.add_site(name=f"{prefix}orientation_ref", quat=tcp_quat, size=[0.001, 0, 0], group=5)
    for i, axis in enumerate("xyz"):
        for kind, ref, kp, kv, lim in (
            ("cartesian", "position_ref", IMPEDANCE_TRANS_STIFFNESS, IMPEDANCE_TRANS_DAMPING,
             IMPEDANCE_MAX_FORCE),
            ("rotation", "orientation_ref", IMPEDANCE_ROT_STIFFNESS, IMPEDANCE_ROT_DAMPING, None),
        ):
            act = spec.add_actuator(name=f"{prefix}{kind}_{axis}", target=f"{prefix}tcp",
                                    trntype=mujoco.mjtTrn.mjTRN_SITE, refsite=f"{prefix}{ref}")
            gear = np.zeros(6)
            gear[i + (3 if kind == "rotation" else 0)] = 1.0
            act.gear = gear
            act.set_to_position(kp=kp, kv=kv)
            if lim is not None:
                act.forcerange = [-lim, lim]
                act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE


def add_panda(parent: mujoco.MjsBody, spec: mujoco.MjSpec, prefix: str = "panda/",
              impedance: bool = False, menagerie: str | None = None) -> None:
    """Add the arm (joints ``{prefix}joint1..7``; torque motors ``{prefix}actuator1..7``, or with
    ``impedance`` the Cartesian actuators of :func:`add_cartesian_impedance`), the hand, two
    coupled fingers ``{prefix}finger_joint1/2`` driven by one position actuator ``{prefix}gripper``
    (ctrl = opening per finger in m, 0..0.04), a ``{prefix}tcp`` site between the fingertips and a
    ``wrist`` camera. With ``menagerie`` (a checkout path) the arm and hand come from Menagerie's
    ``franka_emika_panda/panda.xml`` (same names), otherwise from :func:`build_panda_bodies`."""
    if menagerie is not None:
        attach_menagerie_model(parent, spec, menagerie, "franka_emika_panda/panda.xml", prefix)
    else:
        build_panda_bodies(parent, spec, prefix)
    hand = spec.body(f"{prefix}hand")
    hand.add_site(name=f"{prefix}tcp", pos=[0, 0, PANDA_TCP_FROM_HAND_M], size=[0.005, 0, 0])
    # Wrist camera looks along the fingers (camera looks down its -z axis, hand z points forward).
    hand.add_camera(name="wrist", pos=[0.06, 0, 0.02], quat=quat_look_along_z(), fovy=70)
    if impedance:
        _add_gravity_compensation_and_posture(spec, prefix)
        add_cartesian_impedance(parent, spec, prefix, PANDA_TCP_QUAT)
    else:
        add_arm_actuators(spec, prefix, "actuator", PANDA_TORQUE_LIMIT)
    add_finger_actuator(spec, prefix, PANDA_FINGER_STROKE_M, kp=800.0, force_limit=70.0)


def build_panda_bodies(parent: mujoco.MjsBody, spec: mujoco.MjSpec, prefix: str) -> None:
    """Links from the DH table (capsules), the hand (box) and two box fingers on slide joints,
    coupled by an equality constraint and a mean-opening tendon ``{prefix}split`` (Menagerie's names)."""
    base = parent.add_body(name=f"{prefix}link0")
    base.add_geom(type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.07, 0.05, 0], pos=[0, 0, 0.05],
                  rgba=[0.25, 0.25, 0.25, 1], contype=0, conaffinity=0)
    links = add_dh_chain(base, PANDA_LINKS, prefix, armature=[0.1] * 7, damping=[1.0] * 7)
    link7 = links[-1]
    link7.add_geom(type=mujoco.mjtGeom.mjGEOM_CAPSULE, fromto=[0, 0, 0, 0, 0, PANDA_FLANGE_M],
                   size=[0.04, 0, 0], rgba=[0.9, 0.9, 0.9, 1], contype=ARM_CONTYPE,
                   conaffinity=ARM_CONAFFINITY)
    # The hand is mounted -45 deg about the flange z axis (Franka's flange-to-hand transform).
    hand = link7.add_body(name=f"{prefix}hand", pos=[0, 0, PANDA_FLANGE_M],
                          quat=axis_quat("z", -np.pi / 4))
    hand.mass, hand.ipos = 0.73, [-0.01, 0, 0.03]
    hand.fullinertia = [0.001, 0.0025, 0.0017, 0, 0, 0]
    hand.explicitinertial = True
    hand.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.02, 0.1, 0.025], pos=[0, 0, 0.03],
                  rgba=[0.95, 0.95, 0.95, 1], contype=ARM_CONTYPE, conaffinity=ARM_CONAFFINITY)
    # Fingers slide along the hand's y axis; pads end 1 cm past the TCP.
    for i, (side, sign) in enumerate((("left", 1.0), ("right", -1.0))):
        finger = hand.add_body(name=f"{prefix}{side}_finger", pos=[0, 0, 0.0584])
        finger.mass, finger.ipos = 0.015, [0, sign * 0.01, 0.03]
        finger.fullinertia = [2.4e-6, 2.4e-6, 7.5e-7, 0, 0, 0]
        finger.explicitinertial = True
        finger.add_joint(name=f"{prefix}finger_joint{i + 1}", type=mujoco.mjtJoint.mjJNT_SLIDE,
                         axis=[0, sign, 0], range=[0, PANDA_FINGER_STROKE_M],
                         limited=mujoco.mjtLimited.mjLIMITED_TRUE, armature=0.01, damping=2.0)
        finger.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.01, 0.006, 0.026],
                        pos=[0, sign * 0.006, 0.029], rgba=[0.2, 0.2, 0.2, 1], friction=[1.5, 0.01, 0.001],
                        condim=4, contype=ARM_CONTYPE, conaffinity=ARM_CONAFFINITY, priority=1,
                        solref=[0.004, 1], solimp=[0.95, 0.99, 0.001, 0.5, 2])
    add_finger_coupling(spec, prefix)


def _add_gravity_compensation_and_posture(spec, prefix) -> None:
    """Gravity compensation by MuJoCo (the robot's own model-based feed-forward), weak joint springs
    toward home in place of a nullspace task, and the published joint torque limits."""
    link1 = spec.body(f"{prefix}link1")
    for body in [link1, *link1.find_all(mujoco.mjtObj.mjOBJ_BODY)]:
        body.gravcomp = 1.0
    for i, (home, lim) in enumerate(zip(PANDA_HOME, PANDA_TORQUE_LIMIT)):
        joint = spec.joint(f"{prefix}joint{i + 1}")
        joint.stiffness = [2.0, 0.0, 0.0]  # N m/rad (linear term)
        joint.springref = home
        joint.actfrcrange = [-lim, lim]
        joint.actfrclimited = mujoco.mjtLimited.mjLIMITED_TRUE


def quat_look_along_z() -> np.ndarray:
    """Camera orientation that looks along the parent's +z (camera -z) with image-up = parent +x."""
    return axis_quat("y", np.pi)


def add_arm_actuators(spec: mujoco.MjSpec, prefix: str, name: str, torque_limit: np.ndarray) -> None:
    """Direct torque motors, clamped to the arm's published torque limits (N m)."""
    for i, lim in enumerate(torque_limit):
        act = spec.add_actuator(name=f"{prefix}{name}{i + 1}", target=f"{prefix}joint{i + 1}",
                                trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.ctrlrange = [-lim, lim]
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE


def add_finger_coupling(spec: mujoco.MjSpec, prefix: str) -> None:
    """Equal-opening constraint between the two fingers and their mean-opening tendon ``split``."""
    spec.add_equality(type=mujoco.mjtEq.mjEQ_JOINT, name1=f"{prefix}finger_joint1",
                      name2=f"{prefix}finger_joint2", data=np.r_[0, 1, 0, 0, 0, np.zeros(7)],
                      solref=[0.005, 1])
    tendon = spec.add_tendon(name=f"{prefix}split")
    tendon.wrap_joint(f"{prefix}finger_joint1", 0.5)
    tendon.wrap_joint(f"{prefix}finger_joint2", 0.5)


def add_finger_actuator(spec: mujoco.MjSpec, prefix: str, stroke_m: float, kp: float,
                        force_limit: float) -> None:
    """One position actuator on the fingers' mean opening (ctrl in m per finger), force clamped
    like the real gripper (N)."""
    act = spec.add_actuator(name=f"{prefix}gripper", target=f"{prefix}split",
                            trntype=mujoco.mjtTrn.mjTRN_TENDON)
    act.set_to_position(kp=kp, kv=2 * np.sqrt(kp * 0.05))
    act.ctrlrange = [0, stroke_m]
    act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
    act.forcerange = [-force_limit, force_limit]
    act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
