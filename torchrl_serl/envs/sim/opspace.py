"""Operational-space control (SERL franka_sim ``opspace``), allocation-light for the physics loop."""

from __future__ import annotations

import mujoco
import numpy as np


class OpSpaceController:
    """Torques that drive a site to a position and orientation target, with a nullspace pull to a
    joint posture and gravity/Coriolis compensation (Khatib OSC, as SERL's franka_sim):

    ``tau = J^T Lambda a + (I - J^T Jbar^T) ddq_null + bias``, ``Lambda = (J M^-1 J^T)^-1``,
    ``Jbar = M^-1 J^T Lambda``, ``a = kp e - kd J qdot`` (position and rotation-vector error ``e``),
    ``ddq_null = kp_n (q* - q) - kd_n qdot``. Gains in 1/s^2, critically damped by ``damping_ratio``;
    defaults are franka_sim's. Near singularities (``det(Lambda^-1) < 1e-2``) Lambda comes from a
    pseudo-inverse, as in franka_sim. Unlike franka_sim, ``M^-1`` is MuJoCo's sparse solve over the
    whole tree (fingers included) instead of the inverse of the arm block.

    The algebra is rearranged to one 6x6 Cholesky solve per call:
    ``tau = J^T Lambda (a - J M^-1 ddq_null) + ddq_null + bias``.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        site_id: int,
        qpos_ids: np.ndarray,
        dof_ids: np.ndarray,
        *,
        pos_gains: float = 200.0,
        ori_gains: float = 200.0,
        damping_ratio: float = 1.0,
        nullspace_stiffness: float = 0.5,
    ):
        self.model = model
        self.site_id = site_id
        # slices give views instead of copies in the per-step indexing
        self.qpos = _contiguous(qpos_ids, "qpos_ids")
        self.dofs = _contiguous(dof_ids, "dof_ids")
        self.kp = np.r_[np.full(3, pos_gains), np.full(3, ori_gains)]
        self.kd = damping_ratio * 2 * np.sqrt(self.kp)
        self.kp_null = nullspace_stiffness
        self.kd_null = damping_ratio * 2 * np.sqrt(nullspace_stiffness)
        self._jac = np.zeros((6, model.nv))
        self._JMinv = np.zeros((6, model.nv))
        self._chol = np.zeros((6, 6))
        self._quat = np.zeros(4)
        self._err = np.zeros(6)
        self._rotvec = np.zeros(3)
        self._w = np.zeros(6)

    def __call__(self, data: mujoco.MjData, pos: np.ndarray, quat: np.ndarray, q_null: np.ndarray) -> np.ndarray:
        """Torques ``[n_dof]`` (N m) for target ``pos [3]`` (m), ``quat [4]`` (w, x, y, z) and nullspace posture."""
        m, s, site = self.model, self.dofs, self.site_id
        mujoco.mj_jacSite(m, data, self._jac[:3], self._jac[3:], site)
        J = self._jac[:, s]
        dq = data.qvel[s]
        err = self._err
        err[:3] = pos - data.site_xpos[site]
        xmat = data.site_xmat[site]
        mujoco.mju_mat2Quat(self._quat, xmat)
        # rotation vector taking the current orientation to the target, local -> world frame
        mujoco.mju_subQuat(self._rotvec, quat, self._quat)
        err[3:] = xmat.reshape(3, 3) @ self._rotvec
        ddq_null = self.kp_null * (q_null - data.qpos[self.qpos]) - self.kd_null * dq
        accel = self.kp * err - self.kd * (J @ dq)
        # J M^-1 from the sparse factorisation MuJoCo already holds (no dense inverse)
        mujoco.mj_solveM(m, data, self._JMinv, self._jac)
        JMinv = self._JMinv[:, s]
        rhs = accel - JMinv @ ddq_null
        chol = self._chol
        np.matmul(JMinv, J.T, out=chol)  # Lambda^-1
        mujoco.mju_cholFactor(chol, 0.0)
        diag = chol.diagonal()  # det(Lambda^-1) = prod(diag(L))^2; scalar loop beats np.prod here
        det = 1.0
        for x in diag:
            det *= x
        det *= det
        if det >= 1e-2:
            mujoco.mju_cholSolve(self._w, chol, rhs)
            w = self._w
        else:
            w = np.linalg.pinv(JMinv @ J.T, rcond=1e-2) @ rhs
        return J.T @ w + ddq_null + data.qfrc_bias[s]


def _contiguous(ids: np.ndarray, name: str) -> slice:
    ids = np.asarray(ids)
    if len(ids) == 0 or not np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
        raise ValueError(f"{name} must be contiguous indices of one serial arm, got {ids.tolist()}")
    return slice(int(ids[0]), int(ids[0]) + len(ids))
