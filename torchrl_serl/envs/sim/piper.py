"""AgileX Piper (6-DoF) + parallel gripper built in code from the published kinematics, or
attached from a MuJoCo Menagerie checkout (``agilex_piper/piper.xml``).

Kinematics: the modified-DH table of AgileX's ``piper_sdk`` (``C_PiperForwardKinematics``, with the
2 deg joint-2/3 offset of current firmware). Joint limits and the 0-70 mm gripper stroke: AgileX
specs. Link masses are approximate (the arm weighs ~4.2 kg); inertias are those of solid rods.
Joints are position-controlled (the real arm runs its own joint servo loop), with gravity
compensated by MuJoCo's ``gravcomp`` (the real controller's gravity feed-forward).
"""

from __future__ import annotations

import mujoco
import numpy as np

from torchrl_serl.envs.sim.arm import SimArm, TaskLayout
from torchrl_serl.envs.sim.dh import ARM_CONAFFINITY, ARM_CONTYPE, DHLink, add_dh_chain, axis_quat
from torchrl_serl.envs.sim.ik import DLSInverseKinematics
from torchrl_serl.envs.sim.menagerie import attach_menagerie_model
from torchrl_serl.envs.sim.panda import add_finger_actuator, add_finger_coupling, quat_look_along_z

PIPER_Q_MIN = np.array([-2.687, 0.0, -3.054, -1.745, -1.309, -1.745])
PIPER_Q_MAX = np.array([2.687, 3.403, 0.0, 1.954, 1.309, 1.745])
PIPER_FINGER_STROKE_M = 0.035  # per finger; 0.07 m total opening
PIPER_TCP_FROM_FLANGE_M = 0.13
PIPER_HOME_TCP_M = np.array([0.3, 0.0, 0.2])
# TCP at PIPER_HOME_TCP_M with orientation PIPER_TCP_QUAT (solved with DLSInverseKinematics).
PIPER_HOME = np.array([0.0, 1.2154, -1.0016, 0.0, 0.9203, 0.0])
PIPER_MENAGERIE_MODEL = "agilex_piper/piper.xml"
# Finger slide joints and the sign of their qpos as they open (0 closed, 0.035 m open per finger).
PIPER_FINGER_JOINTS = (("finger_joint1", 1.0), ("finger_joint2", 1.0))
# Menagerie's fingers: joint8 mirrors joint7 through the model's own equality constraint.
MENAGERIE_PIPER_FINGER_JOINTS = (("joint7", 1.0), ("joint8", -1.0))
_D2R = np.pi / 180
_PI2 = np.pi / 2


def _rod_inertia(mass: float, length: float, radius: float) -> tuple[float, ...]:
    side = mass * (3 * radius**2 + length**2) / 12
    return (side, side, mass * radius**2 / 2, 0.0, 0.0, 0.0)


# a, alpha, d, theta offset (SDK, mm/deg -> m/rad), mass (kg), com (m) in the link frame
_DH = [
    (0.0, 0.0, 0.123, 0.0, 0.71, (0.0, 0.0, -0.03)),
    (0.0, -_PI2, 0.0, -172.22 * _D2R, 1.17, (0.14, 0.0, 0.0)),
    (0.28503, 0.0, 0.0, -102.78 * _D2R, 0.50, (-0.02, 0.06, 0.0)),
    (-0.02198, _PI2, 0.25075, 0.0, 0.38, (0.0, 0.0, -0.05)),
    (0.0, -_PI2, 0.0, 0.0, 0.38, (0.0, 0.03, 0.0)),
    (0.0, _PI2, 0.091, 0.0, 0.55, (0.0, 0.0, 0.05)),
]
_RADII = (0.045, 0.04, 0.035, 0.03, 0.03, 0.03)
PIPER_LINKS = tuple(
    DHLink(a, alpha, d, off, (lo, hi), m, com, _rod_inertia(m, 0.15, r), r)
    for (a, alpha, d, off, m, com), lo, hi, r in zip(_DH, PIPER_Q_MIN, PIPER_Q_MAX, _RADII)
)
PIPER_KP = np.array([300.0, 300.0, 300.0, 100.0, 60.0, 60.0])  # N m / rad, servo stiffness
PIPER_TORQUE_LIMIT = np.array([30.0, 30.0, 30.0, 10.0, 10.0, 10.0])  # N m

# Scaled from SERL's Panda task to the Piper's 0.626 m reach (~0.7x), pointing down.
PIPER_LAYOUT = TaskLayout(
    cartesian_low=(0.22, -0.2, 0.0),
    cartesian_high=(0.45, 0.2, 0.25),
    block_xy_low=(0.25, -0.15),
    block_xy_high=(0.40, 0.15),
    front_camera_pos=(0.95, -0.35, 0.55),
    front_camera_target=(0.28, 0.0, 0.12),
)


def add_piper(parent: mujoco.MjsBody, spec: mujoco.MjSpec, prefix: str = "piper/",
              menagerie: str | None = None) -> None:
    """Add the arm (joints ``{prefix}joint1..6`` with position servos ``{prefix}servo1..6``), the
    gripper (``{prefix}gripper`` on the fingers' mean-opening tendon ``{prefix}split``, ctrl =
    opening per finger in m, 0..0.035), ``{prefix}tcp`` (z along the approach direction) and
    ``{prefix}flange`` sites and a ``wrist`` camera, all on ``{prefix}link6``. With ``menagerie``
    (a checkout path) the bodies come from Menagerie's ``agilex_piper/piper.xml`` (fingers
    ``{prefix}joint7/8``), otherwise from :func:`build_piper_bodies` (``finger_joint1/2``)."""
    if menagerie is not None:
        attach_menagerie_model(parent, spec, menagerie, PIPER_MENAGERIE_MODEL, prefix)
        # the arena lights the task; the file's own spotlight would change the camera images
        for light in [light for light in spec.lights if light.name.startswith(prefix)]:
            spec.delete(light)
        # the servos rely on gravity feed-forward, as on the built-in model and the real arm
        base = spec.body(f"{prefix}base_link")
        for body in [base, *base.find_all(mujoco.mjtObj.mjOBJ_BODY)]:
            body.gravcomp = 1.0
        # Menagerie couples the fingers itself (equality); only the mean-opening tendon is missing
        tendon = spec.add_tendon(name=f"{prefix}split")
        for joint, sign in MENAGERIE_PIPER_FINGER_JOINTS:
            tendon.wrap_joint(f"{prefix}{joint}", 0.5 * sign)
    else:
        build_piper_bodies(parent, spec, prefix)
    # Both models' link6 frame is the flange of the SDK's kinematics (z out of the flange, fingers
    # sliding along y), so the task frames sit at the same pose on either.
    link6 = spec.body(f"{prefix}link6")
    link6.add_site(name=f"{prefix}tcp", pos=[0, 0, PIPER_TCP_FROM_FLANGE_M], size=[0.005, 0, 0])
    link6.add_site(name=f"{prefix}flange", pos=[0, 0, 0], size=[0.005, 0, 0])
    link6.add_camera(name="wrist", pos=[0.05, 0, 0.03], quat=quat_look_along_z(), fovy=70)
    for i, (kp, lim) in enumerate(zip(PIPER_KP, PIPER_TORQUE_LIMIT)):
        act = spec.add_actuator(name=f"{prefix}servo{i + 1}", target=f"{prefix}joint{i + 1}",
                                trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=kp, kv=0.1 * kp)
        act.ctrlrange = spec.joint(f"{prefix}joint{i + 1}").range  # rad, the model's joint limits
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-lim, lim]
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    add_finger_actuator(spec, prefix, PIPER_FINGER_STROKE_M, kp=800.0, force_limit=40.0)


def build_piper_bodies(parent: mujoco.MjsBody, spec: mujoco.MjSpec, prefix: str) -> None:
    """Links from the DH table (capsules, gravity compensated), a box gripper body and two box
    fingers on slide joints ``{prefix}finger_joint1/2``, coupled by :func:`add_finger_coupling`."""
    base = parent.add_body(name=f"{prefix}base_link")
    base.add_geom(type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.05, 0.04, 0], pos=[0, 0, 0.04],
                  rgba=[0.3, 0.3, 0.3, 1], contype=0, conaffinity=0)
    links = add_dh_chain(base, PIPER_LINKS, prefix, armature=[0.05] * 6, damping=[1.0] * 6,
                         rgba=(0.85, 0.85, 0.85, 1))
    for body in links:
        body.gravcomp = 1.0
    link6 = links[-1]
    link6.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.03, 0.045, 0.03], pos=[0, 0, 0.05],
                   rgba=[0.2, 0.2, 0.2, 1], contype=ARM_CONTYPE, conaffinity=ARM_CONAFFINITY)
    for i, (side, sign) in enumerate((("left", 1.0), ("right", -1.0))):
        finger = link6.add_body(name=f"{prefix}{side}_finger", pos=[0, 0, 0.08])
        finger.mass, finger.ipos = 0.03, [0, sign * 0.01, 0.03]
        finger.fullinertia = [5e-6, 5e-6, 1.5e-6, 0, 0, 0]
        finger.explicitinertial = True
        finger.gravcomp = 1.0
        finger.add_joint(name=f"{prefix}finger_joint{i + 1}", type=mujoco.mjtJoint.mjJNT_SLIDE,
                         axis=[0, sign, 0], range=[0, PIPER_FINGER_STROKE_M],
                         limited=mujoco.mjtLimited.mjLIMITED_TRUE, armature=0.01, damping=2.0)
        finger.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.01, 0.006, 0.03],
                        pos=[0, sign * 0.006, 0.03 + 0.01], rgba=[0.15, 0.15, 0.15, 1],
                        friction=[1.5, 0.01, 0.001], condim=4, contype=ARM_CONTYPE,
                        conaffinity=ARM_CONAFFINITY, priority=1, solref=[0.004, 1],
                        solimp=[0.95, 0.99, 0.001, 0.5, 2])
    add_finger_coupling(spec, prefix)


# Fixed TCP orientation: fingers open along world y, approach axis 30 deg from vertical, leaning
# away from the base. Straight down is not reachable above ~0.15 m (joint 5 stops at +-75 deg);
# 30 deg reaches the grasp and lift region (checked in tests/envs/sim/test_sim_models.py).
PIPER_TILT_RAD = np.pi / 6
PIPER_TCP_QUAT = axis_quat("y", np.pi - PIPER_TILT_RAD)


class PiperSimArm(SimArm):
    """Piper driven like the real arm under end-pose commands: each control step, damped-least-
    squares IK turns the TCP target (orientation :data:`PIPER_TCP_QUAT`) into joint targets inside
    the joint limits, which the joint servos track for the physics substeps. Home is the posture
    with the TCP at :data:`PIPER_HOME_TCP_M`.

    ``menagerie_root``: path of a MuJoCo Menagerie checkout; the arm and gripper then come from its
    ``agilex_piper/piper.xml`` (meshes, URDF inertials and joint limits) instead of the built-in
    model, with the same servos, gripper stroke, TCP and wrist camera (see :func:`add_piper`).
    """

    tcp_site = "piper/tcp"
    layout = PIPER_LAYOUT

    def __init__(self, menagerie_root: str | None = None):
        self.menagerie_root = menagerie_root
        self.finger_joints = (MENAGERIE_PIPER_FINGER_JOINTS if menagerie_root is not None
                              else PIPER_FINGER_JOINTS)

    def add_to(self, world, spec):
        add_piper(world, spec, menagerie=self.menagerie_root)

    def bind(self, model):
        self.model = model
        joints = [model.joint(f"piper/joint{i}") for i in range(1, 7)]
        self.qpos_ids = np.array([j.qposadr[0] for j in joints])
        self.dof_ids = np.array([j.dofadr[0] for j in joints])
        self.act_ids = np.array([model.actuator(f"piper/servo{i}").id for i in range(1, 7)])
        self.gripper_id = model.actuator("piper/gripper").id
        self.finger_qpos_ids = np.array(
            [model.joint(f"piper/{name}").qposadr[0] for name, _ in self.finger_joints])
        self.finger_open_qpos = PIPER_FINGER_STROKE_M * np.array([s for _, s in self.finger_joints])
        self.ik = DLSInverseKinematics(model, model.site(self.tcp_site).id, self.qpos_ids,
                                       self.dof_ids)
        # PIPER_HOME itself on the built-in model; a nearby posture on Menagerie's kinematics
        self.home = self.ik.solve(PIPER_HOME, PIPER_HOME_TCP_M, PIPER_TCP_QUAT)
        self.q_cmd = self.home.copy()

    def reset(self, data):
        data.qpos[self.qpos_ids] = self.home
        data.qpos[self.finger_qpos_ids] = self.finger_open_qpos
        data.ctrl[self.act_ids] = self.home
        self.q_cmd = self.home.copy()
        self.set_gripper(data, 0.0)

    def set_gripper(self, data, closure):
        data.ctrl[self.gripper_id] = PIPER_FINGER_STROKE_M * (1.0 - closure)

    def advance(self, data, tcp_target, n_substeps):
        self.q_cmd = self.ik.solve(self.q_cmd, tcp_target, PIPER_TCP_QUAT)
        data.ctrl[self.act_ids] = self.q_cmd
        mujoco.mj_step(self.model, data, nstep=n_substeps)
