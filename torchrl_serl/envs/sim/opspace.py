"""Operational-space control (SERL franka_sim ``opspace``), allocation-light for the physics loop."""

from __future__ import annotations

import mujoco
import numpy as np


class OpSpaceController:
    """Torques that drive a site to a position and orientation target, with a nullspace pull to a
    joint posture and gravity/Coriolis compensation (Khatib OSC, as SERL's franka_sim):

    ``tau = J^T Lambda [kp (x* - x) - kd xdot ; kp_o e_o - kd_o w] + (I - J^T Jbar^T) (kp_n (q* - q) - kd_n qdot) + bias``

    Gains: ``pos_gains``/``ori_gains`` in 1/s^2, critically damped by ``damping_ratio``;
    ``nullspace_stiffness`` in 1/s^2. Defaults are franka_sim's.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        site_id: int,
        dof_ids: np.ndarray,
        *,
        pos_gains: float = 200.0,
        ori_gains: float = 200.0,
        damping_ratio: float = 1.0,
        nullspace_stiffness: float = 0.5,
    ):
        self.model = model
        self.site_id = site_id
        self.dof_ids = np.asarray(dof_ids)
        self.kp = np.r_[np.full(3, pos_gains), np.full(3, ori_gains)]
        self.kd = damping_ratio * 2 * np.sqrt(self.kp)
        self.kp_null = nullspace_stiffness
        self.kd_null = damping_ratio * 2 * np.sqrt(nullspace_stiffness)
        self._jac = np.zeros((6, model.nv))
        self._JMinv = np.zeros((6, model.nv))
        self._quat = np.zeros(4)
        self._err = np.zeros(6)
        self._rotvec = np.zeros(3)

    def __call__(self, data: mujoco.MjData, pos: np.ndarray, quat: np.ndarray, q_null: np.ndarray) -> np.ndarray:
        """Torques ``[n_dof]`` (N m) for target ``pos [3]`` (m), ``quat [4]`` (w, x, y, z) and nullspace posture."""
        m, dof = self.model, self.dof_ids
        mujoco.mj_jacSite(m, data, self._jac[:3], self._jac[3:], self.site_id)
        J = self._jac[:, dof]
        dq = data.qvel[dof]
        err = self._err
        err[:3] = pos - data.site_xpos[self.site_id]
        mujoco.mju_mat2Quat(self._quat, data.site_xmat[self.site_id])
        # rotation vector taking the current orientation to the target, local -> world frame
        mujoco.mju_subQuat(self._rotvec, quat, self._quat)
        err[3:] = data.site_xmat[self.site_id].reshape(3, 3) @ self._rotvec
        accel = self.kp * err - self.kd * (J @ dq)
        # J M^-1 via the sparse factorisation MuJoCo already holds (no dense inverse)
        mujoco.mj_solveM(m, data, self._JMinv, self._jac)
        JMinv = self._JMinv[:, dof]
        Mx_inv = JMinv @ J.T
        # franka_sim: pseudo-inverse near singularities
        if abs(np.linalg.det(Mx_inv)) >= 1e-2:
            Mx = np.linalg.inv(Mx_inv)
        else:
            Mx = np.linalg.pinv(Mx_inv, rcond=1e-2)
        tau = J.T @ (Mx @ accel)
        ddq = self.kp_null * (q_null - data.qpos[dof]) - self.kd_null * dq
        # dynamically consistent nullspace projector I - J^T Jbar^T, Jbar = M^-1 J^T Lambda
        tau += ddq - J.T @ (Mx @ (JMinv @ ddq))
        tau += data.qfrc_bias[dof]
        return tau
