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
        self._dq = np.zeros(len(self.dof_ids))
        # views made once (slicing or fancy indexing costs ~0.3-1 us a call)
        d = self._data
        qpos = _index(self.qpos_ids)
        self._q_view = d.qpos[qpos] if isinstance(qpos, slice) else None
        self._xpos = d.site_xpos[site_id]
        self._xmat = d.site_xmat[site_id]
        self._xmat33 = self._xmat.reshape(3, 3)
        self._jacp, self._jacr = self._jac[:3], self._jac[3:]
        dofs = _index(self.dof_ids)
        if isinstance(dofs, slice):
            self._J = self._jac[:, dofs]  # a view: scaled in place after every mj_jacSite
            self._J_rot = self._J[3:]
        else:
            self._J = None
        self._err_p, self._err_r = self._err[:3], self._err[3:]
        self._native = None
        if isinstance(qpos, slice) and isinstance(dofs, slice) and len(self.dof_ids) <= 16:
            from torchrl_serl.envs.sim.opspace import NativeBuffers, native_osc_library

            self._native = native_osc_library()  # also holds the C version of solve()
            n = len(self.dof_ids)
            self._buffers = NativeBuffers(q_init=n, q_low=n, q_high=n, pos=3, quat=4, jac=6 * model.nv, out=n)

    def error(self, q: np.ndarray, pos: np.ndarray, quat: np.ndarray) -> np.ndarray:
        """Weighted pose error ``[6]`` (m, rotation in m-equivalents) of posture ``q``."""
        if self._q_view is not None:
            self._q_view[...] = q
        else:
            self._data.qpos[self.qpos_ids] = q
        mujoco.mj_kinematics(self.model, self._data)
        np.subtract(pos, self._xpos, out=self._err_p)
        mujoco.mju_mat2Quat(self._quat, self._xmat)
        mujoco.mju_subQuat(self._rotvec, quat, self._quat)
        np.matmul(self._xmat33, self._rotvec, out=self._err_r)
        self._err_r *= self.rot_weight
        return self._err

    def _jacobian(self) -> np.ndarray:
        """Weighted arm Jacobian ``[6, n]`` at the posture of the last :meth:`error` call."""
        mujoco.mj_comPos(self.model, self._data)  # the Jacobian needs com-based dofs
        mujoco.mj_jacSite(self.model, self._data, self._jacp, self._jacr, self.site_id)
        if self._J is None:
            J = self._jac[:, self.dof_ids]
            J[3:] *= self.rot_weight
            return J
        self._J_rot *= self.rot_weight
        return self._J

    def solve(self, q_init: np.ndarray, pos: np.ndarray, quat: np.ndarray) -> np.ndarray:
        """The best posture found within ``max_iters`` (closest to the target if unreachable).
        Runs in C (same iteration) when the native library is available (see ``opspace.py``)."""
        if self._native is not None:
            return self._solve_native(q_init, pos, quat)
        low, high = self.q_low, self.q_high
        q = np.clip(np.asarray(q_init, float), low, high)
        best, best_q = np.inf, q
        A, dq_task, dq = self._A, self._dq_task, self._dq
        for _ in range(self.max_iters):
            err = self.error(q, pos, quat)
            sq = float(err @ err)
            # converged, or no progress: stuck at a joint limit / outside the reachable set
            if sq < self.tol**2 or sq > 0.98 * best:
                if sq < best:
                    best_q = q
                break
            best, best_q = sq, q
            J = self._jacobian()
            # (J J^T + lambda^2 I) is SPD: MuJoCo's 6x6 Cholesky is ~10x cheaper than np.linalg.solve
            np.matmul(J, J.T, out=A)
            A += self._reg
            mujoco.mju_cholFactor(A, 0.0)
            mujoco.mju_cholSolve(dq_task, A, err)
            np.matmul(J.T, dq_task, out=dq)
            q = q + dq  # a new array: best_q keeps the previous iterate
            np.maximum(q, low, out=q)  # np.clip without its ~4 us dispatch
            np.minimum(q, high, out=q)
        return best_q

    def _solve_native(self, q_init, pos, quat) -> np.ndarray:
        v = self._buffers.views
        v["q_init"][:], v["q_low"][:], v["q_high"][:] = q_init, self.q_low, self.q_high
        v["pos"][:], v["quat"][:] = pos, quat
        p_q, p_low, p_high, p_pos, p_quat, p_jac, p_out = self._buffers.ptrs
        self._native.dls_ik(
            self.model._address, self._data._address, self.site_id, int(self.qpos_ids[0]),
            int(self.dof_ids[0]), len(self.dof_ids), p_q, p_low, p_high, p_pos, p_quat,
            self.damping**2, self.rot_weight, self.max_iters, self.tol, p_jac, p_out)
        return v["out"].copy()


def _index(ids: np.ndarray):
    """A slice when ``ids`` are consecutive (views instead of copies), else the index array."""
    ids = np.asarray(ids)
    if len(ids) and np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
        return slice(int(ids[0]), int(ids[0]) + len(ids))
    return ids
