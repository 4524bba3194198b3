"""The allocation-free OpSpaceController against the textbook dense Khatib OSC formula."""

import mujoco
import numpy as np

from torchrl_serl.envs import PandaPickCubeEnv
from torchrl_serl.envs.sim.panda import PANDA_HOME, PANDA_TCP_QUAT


def _dense_osc(osc, model, data, pos, quat, q_null):
    s = osc.dofs
    jacp, jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
    mujoco.mj_jacSite(model, data, jacp, jacr, osc.site_id)
    J = np.vstack([jacp, jacr])[:, s]
    M = np.zeros((model.nv, model.nv))
    mujoco.mj_fullM(model, data, M)
    Minv = np.linalg.inv(M)[s, s]
    Lam = np.linalg.inv(J @ Minv @ J.T)
    xmat = data.site_xmat[osc.site_id].reshape(3, 3)
    cur = np.zeros(4)
    mujoco.mju_mat2Quat(cur, xmat.ravel())
    rv = np.zeros(3)
    mujoco.mju_subQuat(rv, quat, cur)
    err = np.r_[pos - data.site_xpos[osc.site_id], xmat @ rv]
    dq = data.qvel[s]
    a = osc.kp * err - osc.kd * (J @ dq)
    ddq_null = osc.kp_null * (q_null - data.qpos[osc.qpos]) - osc.kd_null * dq
    Jbar = Minv @ J.T @ Lam
    return J.T @ Lam @ a + (np.eye(len(dq)) - J.T @ Jbar.T) @ ddq_null + data.qfrc_bias[s]


def test_osc_matches_dense_formula_and_writes_into_out():
    env = PandaPickCubeEnv(seed=0)
    env.reset()
    m, d, osc = env.model, env.data, env.arm.osc
    rng = np.random.default_rng(0)
    for _ in range(5):
        d.qpos[osc.qpos] = PANDA_HOME + rng.normal(0, 0.2, 7)
        d.qvel[osc.dofs] = rng.normal(0, 0.5, 7)
        mujoco.mj_forward(m, d)
        target = d.site_xpos[osc.site_id] + rng.normal(0, 0.05, 3)
        ref = _dense_osc(osc, m, d, target, PANDA_TCP_QUAT, PANDA_HOME)
        tau = osc(d, target, PANDA_TCP_QUAT, PANDA_HOME)
        np.testing.assert_allclose(tau, ref, rtol=1e-6, atol=1e-8)
        out = np.full(7, np.nan)
        assert osc(d, target, PANDA_TCP_QUAT, PANDA_HOME, out=out) is out
        np.testing.assert_array_equal(out, tau)
    env.close()


def _rollout(native: bool, steps: int = 60):
    import torch

    env = PandaPickCubeEnv(max_episode_steps=40, seed=0)
    if not native:
        env.arm.native_osc = None
    gen = torch.Generator().manual_seed(0)
    actions = iter(torch.rand(steps, 4, generator=gen) * 2 - 1)
    td = env.rollout(steps, lambda td: td.set("action", next(actions)), break_when_any_done=False)
    qpos = env.data.qpos.copy()
    env.close()
    return td, qpos


def test_native_osc_loop_matches_python_controller():
    from torchrl_serl.envs.sim.opspace import native_osc_library

    if native_osc_library() is None:
        import pytest

        pytest.skip("no C compiler / mujoco headers: the Python controller is used")
    (td_py, q_py), (td_c, q_c) = _rollout(False), _rollout(True)
    for key in (("next", "observation"), ("next", "reward")):
        np.testing.assert_allclose(td_c[key].numpy(), td_py[key].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q_c, q_py, atol=1e-6)


def test_native_ik_matches_python_ik():
    from torchrl_serl.envs import PiperPickCubeEnv
    from torchrl_serl.envs.sim.piper import PIPER_HOME, PIPER_TCP_QUAT

    env = PiperPickCubeEnv()
    ik = env.arm.ik
    if ik._native is None:
        import pytest

        pytest.skip("no C compiler / mujoco headers: the Python IK is used")
    rng = np.random.default_rng(0)
    native = ik._native
    # reachable box targets, and unreachable ones (joint limits / out of reach)
    targets = [rng.uniform((0.22, -0.2, 0.0), (0.45, 0.2, 0.25)) for _ in range(8)]
    targets += [np.array([1.0, 0.0, 0.3]), np.array([0.0, 0.0, -0.5])]
    for pos in targets:
        q0 = PIPER_HOME + rng.normal(0, 0.1, 6)
        ik._native = native
        q_c = ik.solve(q0, pos, PIPER_TCP_QUAT)
        ik._native = None
        q_py = ik.solve(q0, pos, PIPER_TCP_QUAT)
        np.testing.assert_allclose(q_c, q_py, atol=1e-9)
    env.close()
