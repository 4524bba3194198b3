"""Damped-least-squares inverse kinematics to joint position targets (what the Piper executes)."""

from __future__ import annotations

import mujoco
import numpy as np


class DLSInverseKinematics:
    """Joint positions ``[n]`` (rad) that put a site at ``pos [3]`` (m) with orientation ``quat [4]``.

    Iterates ``dq = J^T (J J^T + lambda^2 I)^-1 e`` on a private ``MjData`` (the simulation state is
    never touched), warm-started from the previous solution and clipped to the joint limits every
    iteration, so the result is always a posture the arm can reach. ``rot_weight`` (m/rad) trades
    orientation against position error; ``tol`` is on the weighted error norm (m).
    """

    def __init__(self, model: mujoco.MjModel, site_id: int, qpos_ids: np.ndarray,
                 dof_ids: np.ndarray, *, damping: float = 0.05, rot_weight: float = 0.2,
                 max_iters: int = 15, tol: float = 5e-4):
        self.model = model
        self.site_id = site_id
        self.qpos_ids = np.asarray(qpos_ids)
        self.dof_ids = np.asarray(dof_ids)
        jnt = [int(np.flatnonzero(model.jnt_qposadr == i)[0]) for i in self.qpos_ids]
        self.q_low, self.q_high = model.jnt_range[jnt].T.copy()
        self.damping, self.rot_weight = damping, rot_weight
        self.max_iters, self.tol = max_iters, tol
        self._data = mujoco.MjData(model)
        self._jac = np.zeros((6, model.nv))
        self._err = np.zeros(6)
        self._quat = np.zeros(4)
        self._rotvec = np.zeros(3)
        self._reg = damping**2 * np.eye(6)
        self._A = np.zeros((6, 6))
        self._dq_task = np.zeros(6)

    def error(self, q: np.ndarray, pos: np.ndarray, quat: np.ndarray) -> np.ndarray:
        """Weighted pose error ``[6]`` (m, rotation in m-equivalents) of posture ``q``."""
        d = self._data
        d.qpos[self.qpos_ids] = q
        mujoco.mj_kinematics(self.model, d)
        self._err[:3] = pos - d.site_xpos[self.site_id]
        mujoco.mju_mat2Quat(self._quat, d.site_xmat[self.site_id])
        mujoco.mju_subQuat(self._rotvec, quat, self._quat)
        self._err[3:] = self.rot_weight * (d.site_xmat[self.site_id].reshape(3, 3) @ self._rotvec)
        return self._err

    def solve(self, q_init: np.ndarray, pos: np.ndarray, quat: np.ndarray) -> np.ndarray:
        """The best posture found within ``max_iters`` (closest to the target if unreachable)."""
        q = np.clip(np.asarray(q_init, float), self.q_low, self.q_high)
        best, best_q = np.inf, q
        for _ in range(self.max_iters):
            err = self.error(q, pos, quat)
            sq = float(err @ err)
            # converged, or no progress: stuck at a joint limit / outside the reachable set
            if sq < self.tol**2 or sq > 0.98 * best:
                if sq < best:
                    best_q = q
                break
            best, best_q = sq, q
            mujoco.mj_comPos(self.model, self._data)  # the Jacobian needs com-based dofs
            mujoco.mj_jacSite(self.model, self._data, self._jac[:3], self._jac[3:], self.site_id)
            J = self._jac[:, self.dof_ids]
            J[3:] *= self.rot_weight
            # (J J^T + lambda^2 I) is SPD: MuJoCo's 6x6 Cholesky is ~10x cheaper than np.linalg.solve
            A = self._A
            np.matmul(J, J.T, out=A)
            A += self._reg
            mujoco.mju_cholFactor(A, 0.0)
            mujoco.mju_cholSolve(self._dq_task, A, err)
            q = np.clip(q + J.T @ self._dq_task, self.q_low, self.q_high)
        return best_q
