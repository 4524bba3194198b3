"""One rotation module for drivers (NumPy, one pose) and transforms (torch, batched): same math, same conventions."""

import math

import numpy as np
import pytest
import torch

from torchrl_serl.envs.rotations import (
    euler_xyz_to_quat,
    from_xyzw,
    normalize_quat,
    quat_angle,
    quat_conj,
    quat_mul,
    quat_rotate,
    quat_slerp,
    quat_to_euler_xyz,
    rotvec_to_quat,
    to_xyzw,
)


def _matrix(rpy):
    """``Rz(yaw) Ry(pitch) Rx(roll)`` written out, the convention the module promises."""
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_euler_convention_is_rz_ry_rx_and_round_trips(rng):
    for _ in range(50):
        rpy = rng.uniform([-math.pi, -math.pi / 2 + 0.01, -math.pi], [math.pi, math.pi / 2 - 0.01, math.pi])
        q = euler_xyz_to_quat(rpy)
        assert q.shape == (4,) and q[3] >= 0
        for axis in np.eye(3):
            np.testing.assert_allclose(quat_rotate(q, axis), _matrix(rpy) @ axis, atol=1e-12)
        np.testing.assert_allclose(quat_to_euler_xyz(q), rpy, atol=1e-9)
        np.testing.assert_allclose(quat_to_euler_xyz(-q), rpy, atol=1e-9)  # q and -q: one rotation


def test_numpy_and_torch_give_the_same_results(rng):
    a, b = rng.normal(size=(16, 4)), rng.normal(size=(16, 4))
    v, rpy = rng.normal(size=(16, 3)), rng.uniform(-3, 3, size=(16, 3))
    unit = a / np.linalg.norm(a, axis=-1, keepdims=True)
    cases = [
        (quat_mul, (a, b)), (quat_conj, (a,)), (quat_rotate, (unit, v)), (normalize_quat, (a,)),
        (quat_angle, (a, b)), (quat_slerp, (a, b, 0.3)), (rotvec_to_quat, (v,)),
        (euler_xyz_to_quat, (rpy,)), (quat_to_euler_xyz, (unit,)), (to_xyzw, (a, "wxyz")),
    ]
    for fn, args in cases:
        expected = fn(*args)
        got = fn(*(torch.as_tensor(x) if isinstance(x, np.ndarray) else x for x in args))
        assert isinstance(expected, np.ndarray) and isinstance(got, torch.Tensor), fn.__name__
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12, err_msg=fn.__name__)
        # one pose at a time (the drivers' use) agrees with the batch
        single = fn(*(x[3] if isinstance(x, np.ndarray) else x for x in args))
        np.testing.assert_allclose(single, expected[3], atol=1e-12, err_msg=fn.__name__)


def test_product_conjugate_and_rotation_agree(rng):
    a, b = normalize_quat(rng.normal(size=4)), normalize_quat(rng.normal(size=4))
    v = rng.normal(size=3)
    np.testing.assert_allclose(quat_rotate(quat_mul(a, b), v), quat_rotate(a, quat_rotate(b, v)), atol=1e-12)
    np.testing.assert_allclose(quat_mul(a, quat_conj(a)), [0, 0, 0, 1], atol=1e-12)
    assert quat_angle(a, a) == pytest.approx(0.0, abs=1e-6)
    assert quat_angle(a, -a) == pytest.approx(0.0, abs=1e-6)


def test_rotvec_and_angle_and_slerp():
    q = rotvec_to_quat([0.0, 0.0, 0.8])
    np.testing.assert_allclose(q, [0, 0, math.sin(0.4), math.cos(0.4)], atol=1e-12)
    identity = np.array([0.0, 0, 0, 1])
    assert quat_angle(identity, q) == pytest.approx(0.8)
    half = quat_slerp(identity, q, 0.5)
    assert quat_angle(identity, half) == pytest.approx(0.4)
    np.testing.assert_allclose(quat_slerp(identity, q, 1.0), q, atol=1e-12)
    np.testing.assert_allclose(quat_slerp(q, -q, 0.5), q, atol=1e-12)  # -q is the same rotation: short arc


def test_rotvec_to_quat_is_differentiable_at_zero():
    rotvec = torch.zeros(2, 3, requires_grad=True)
    rotvec_to_quat(rotvec).sum().backward()
    assert torch.isfinite(rotvec.grad).all()
    torch.testing.assert_close(rotvec.grad, torch.full((2, 3), 0.5))


def test_mujoco_order_round_trip_and_errors():
    wxyz = np.array([0.5, 0.1, 0.2, 0.3])
    np.testing.assert_array_equal(to_xyzw(wxyz, "wxyz"), [0.1, 0.2, 0.3, 0.5])
    np.testing.assert_array_equal(from_xyzw(to_xyzw(wxyz, "wxyz"), "wxyz"), wxyz)
    with pytest.raises(ValueError, match="order must be one of"):
        to_xyzw(wxyz, "zyxw")
    with pytest.raises(ValueError, match="zero norm"):
        normalize_quat([0.0, 0, 0, 0])
    with pytest.raises(ValueError, match="not finite"):
        normalize_quat([np.nan, 0, 0, 1])
    with pytest.raises(ValueError, match="4 entries"):
        normalize_quat([0.0, 0, 1])
