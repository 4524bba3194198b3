"""Operational-space control (SERL franka_sim ``opspace``), allocation-light for the physics loop."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess

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
        # views into the persistent buffers, made once (slicing costs ~0.2 us a call)
        self._jacp, self._jacr = self._jac[:3], self._jac[3:]
        self._J, self._JT = self._jac[:, self.dofs], self._jac[:, self.dofs].T
        self._JMinv_arm = self._JMinv[:, self.dofs]
        n = len(qpos_ids)
        self._chol = np.zeros((6, 6))
        self._quat = np.zeros(4)
        self._err = np.zeros(6)
        self._err_p, self._err_r = self._err[:3], self._err[3:]
        self._rotvec = np.zeros(3)
        self._w = np.zeros(6)
        self._jdq = np.zeros(6)
        self._accel = np.zeros(6)
        self._rhs = np.zeros(6)
        self._ddq = np.zeros(n)
        self._tmp = np.zeros(n)
        self._data = None

    def _bind(self, data: mujoco.MjData) -> None:
        """Views of ``data`` used every call (each attribute access would build a new array)."""
        s, site = self.dofs, self.site_id
        self._data = data
        self._dq = data.qvel[s]
        self._q = data.qpos[self.qpos]
        self._bias = data.qfrc_bias[s]
        self._xpos = data.site_xpos[site]
        self._xmat = data.site_xmat[site]
        self._xmat33 = self._xmat.reshape(3, 3)

    def __call__(self, data: mujoco.MjData, pos: np.ndarray, quat: np.ndarray, q_null: np.ndarray,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Torques ``[n_dof]`` (N m) for target ``pos [3]`` (m), ``quat [4]`` (w, x, y, z) and
        nullspace posture, written into ``out`` if given (e.g. a view of ``data.ctrl``)."""
        if data is not self._data:
            self._bind(data)
        m = self.model
        J, dq = self._J, self._dq
        mujoco.mj_jacSite(m, data, self._jacp, self._jacr, self.site_id)
        np.subtract(pos, self._xpos, out=self._err_p)
        mujoco.mju_mat2Quat(self._quat, self._xmat)
        # rotation vector taking the current orientation to the target, local -> world frame
        mujoco.mju_subQuat(self._rotvec, quat, self._quat)
        np.matmul(self._xmat33, self._rotvec, out=self._err_r)
        # ddq_null = kp_n (q* - q) - kd_n dq
        ddq, tmp = self._ddq, self._tmp
        np.subtract(q_null, self._q, out=ddq)
        ddq *= self.kp_null
        np.multiply(dq, self.kd_null, out=tmp)
        ddq -= tmp
        # accel = kp e - kd J dq
        accel, jdq = self._accel, self._jdq
        np.multiply(self.kp, self._err, out=accel)
        np.matmul(J, dq, out=jdq)
        jdq *= self.kd
        accel -= jdq
        # J M^-1 from the sparse factorisation MuJoCo already holds (no dense inverse)
        mujoco.mj_solveM(m, data, self._JMinv, self._jac)
        JMinv = self._JMinv_arm
        rhs = self._rhs
        np.matmul(JMinv, ddq, out=rhs)
        np.subtract(accel, rhs, out=rhs)
        chol = self._chol
        np.matmul(JMinv, self._JT, out=chol)  # Lambda^-1
        mujoco.mju_cholFactor(chol, 0.0)
        # det(Lambda^-1) = prod(diag(L))^2; scalar loop beats np.prod here
        det = chol[0, 0] * chol[1, 1] * chol[2, 2] * chol[3, 3] * chol[4, 4] * chol[5, 5]
        det *= det
        if det >= 1e-2:
            mujoco.mju_cholSolve(self._w, chol, rhs)
            w = self._w
        else:
            w = np.linalg.pinv(JMinv @ J.T, rcond=1e-2) @ rhs
        tau = np.empty(len(ddq)) if out is None else out
        np.matmul(self._JT, w, out=tau)
        tau += ddq
        tau += self._bias
        return tau


def _contiguous(ids: np.ndarray, name: str) -> slice:
    ids = np.asarray(ids)
    if len(ids) == 0 or not np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
        raise ValueError(f"{name} must be contiguous indices of one serial arm, got {ids.tolist()}")
    return slice(int(ids[0]), int(ids[0]) + len(ids))


# ---- native substep loop ---------------------------------------------------------------------
_NATIVE_SRC = os.path.join(os.path.dirname(__file__), "_osc_native.c")
_native_lib = None


def native_osc_library():
    """``ctypes`` handle of ``_osc_native.c`` (the controller + ``mj_step`` loop in C, linked to the
    ``libmujoco`` the ``mujoco`` package ships), compiled once with the system C compiler into
    ``$TORCHRL_SERL_CACHE`` (default ``~/.cache/torchrl_serl``). ``None`` when there is no compiler,
    the build fails, or ``TORCHRL_SERL_NATIVE_OSC=0``: callers then use :class:`OpSpaceController`."""
    global _native_lib
    if os.environ.get("TORCHRL_SERL_NATIVE_OSC", "1") == "0":
        return None
    if _native_lib is not None:
        return _native_lib or None
    _native_lib = False
    try:
        mj_dir = os.path.dirname(mujoco.__file__)
        libs = sorted(f for f in os.listdir(mj_dir) if f.startswith("libmujoco.so"))
        cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if not libs or cc is None or not os.path.isdir(os.path.join(mj_dir, "include")):
            return None
        with open(_NATIVE_SRC, "rb") as f:
            key = hashlib.sha256(f.read() + mujoco.__version__.encode() + mj_dir.encode()).hexdigest()[:16]
        cache = os.environ.get("TORCHRL_SERL_CACHE", os.path.expanduser("~/.cache/torchrl_serl"))
        path = os.path.join(cache, f"osc_native_{key}.so")
        if not os.path.exists(path):
            os.makedirs(cache, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            subprocess.run([cc, "-O2", "-shared", "-fPIC", "-I", os.path.join(mj_dir, "include"),
                            _NATIVE_SRC, "-o", tmp, "-L", mj_dir, f"-l:{libs[0]}",
                            f"-Wl,-rpath,{mj_dir}"], check=True, capture_output=True, timeout=120)
            os.replace(tmp, path)
        lib = ctypes.CDLL(path)
        dp, i, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
        lib.osc_advance.restype = i
        lib.osc_advance.argtypes = [dp, dp, i, i, i, i, i, i, dp, dp, dp, dp, dp, d, d, dp, dp]
        lib.dls_ik.restype = i
        lib.dls_ik.argtypes = [dp, dp, i, i, i, i, dp, dp, dp, dp, dp, d, d, i, d, dp, dp]
        _native_lib = lib
    except (OSError, subprocess.SubprocessError):
        return None
    return _native_lib


class NativeBuffers:
    """Named float64 arrays in one private block, with their addresses for C fetched once
    (``ndarray.ctypes.data`` costs ~1 us a call): ``views[name]`` to fill, ``ptrs`` in order."""

    def __init__(self, **sizes: int):
        self.block = np.zeros(sum(sizes.values()))
        self.views, self.ptrs, start = {}, [], 0
        for name, size in sizes.items():
            self.views[name] = self.block[start:start + size]
            self.ptrs.append(self.block.ctypes.data + self.block.itemsize * start)
            start += size


class NativeOSCLoop:
    """``n_substeps`` of ``ctrl[acts] = osc(...)`` + ``mj_step`` in one C call (same algebra and
    order as :class:`OpSpaceController`, results equal to float rounding). A near-singular substep
    (``det(Lambda^-1) < 1e-2``) falls back to the Python controller for its pseudo-inverse."""

    def __init__(self, lib, osc: OpSpaceController, act_slice: slice):
        self.lib, self.osc, self.acts = lib, osc, act_slice
        n = osc.dofs.stop - osc.dofs.start
        if n > 16:
            raise ValueError("the native OSC loop handles at most 16 arm joints")
        nv = osc.model.nv
        self._buffers = NativeBuffers(pos=3, quat=4, q_null=n, kp=6, kd=6, jac=6 * nv, jminv=6 * nv)

    def advance(self, data: mujoco.MjData, pos: np.ndarray, quat: np.ndarray, q_null: np.ndarray,
                n_substeps: int) -> None:
        osc, m = self.osc, self.osc.model
        v = self._buffers.views
        v["pos"][:], v["quat"][:], v["q_null"][:] = pos, quat, q_null
        v["kp"][:], v["kd"][:] = osc.kp, osc.kd  # copied each call: the gains may be changed
        p_pos, p_quat, p_qnull, p_kp, p_kd, p_jac, p_jminv = self._buffers.ptrs
        n = osc.dofs.stop - osc.dofs.start
        done = 0
        while done < n_substeps:
            done += self.lib.osc_advance(
                m._address, data._address, n_substeps - done, osc.site_id, osc.dofs.start,
                osc.qpos.start, self.acts.start, n, p_pos, p_quat, p_qnull, p_kp, p_kd,
                osc.kp_null, osc.kd_null, p_jac, p_jminv)
            if done < n_substeps:  # near-singular: this substep in Python (pinv branch)
                osc(data, pos, quat, q_null, out=data.ctrl[self.acts])
                mujoco.mj_step(m, data)
                done += 1
