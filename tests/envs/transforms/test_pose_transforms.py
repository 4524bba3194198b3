import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import Compose, TransformedEnv
from torchrl.envs.utils import check_env_specs

from toy_arm_env import ToyArmEnv, quat_from_axis_angle
from torchrl_serl.envs.transforms.gripper_penalty import GripperPenalty
from torchrl_serl.envs.transforms.quat_to_euler import QuatToEuler
from torchrl_serl.envs.transforms.relative_frame import RelativeFrame
from torchrl_serl.envs.rotations import from_xyzw, quat_mul, quat_rotate, to_xyzw


def _axis_quat(i: int, angle: torch.Tensor) -> torch.Tensor:
    axis = torch.zeros(*angle.shape, 3)
    axis[..., i] = 1
    return to_xyzw(quat_from_axis_angle(axis, angle), "wxyz")


@pytest.mark.parametrize("order", ["wxyz", "xyzw"])
def test_quat_to_euler_recovers_angles_on_batch(order):
    g = torch.Generator().manual_seed(0)
    rpy = (torch.rand(500, 3, generator=g) * 2 - 1) * torch.tensor([math.pi, math.pi / 2 - 0.01, math.pi])
    # extrinsic xyz: R = Rz(yaw) Ry(pitch) Rx(roll)
    q = quat_mul(_axis_quat(2, rpy[:, 2]), quat_mul(_axis_quat(1, rpy[:, 1]), _axis_quat(0, rpy[:, 0])))
    pos = torch.randn(500, 3, generator=g)
    td = TensorDict(tcp_pose=torch.cat([pos, from_xyzw(q, order)], -1), batch_size=[500])
    out = QuatToEuler(quat_order=order)(td)["tcp_pose"]
    assert out.shape == (500, 6)
    torch.testing.assert_close(out[:, :3], pos)
    torch.testing.assert_close(out[:, 3:], rpy, atol=1e-4, rtol=0)


def test_quat_to_euler_on_env_and_bad_shape():
    env = TransformedEnv(ToyArmEnv(), QuatToEuler())
    check_env_specs(env)
    assert env.rollout(3)["next", "tcp_pose"].shape == (3, 6)
    with pytest.raises(ValueError, match=r"\[\*B, 7\]"):
        QuatToEuler()(TensorDict(tcp_pose=torch.zeros(6)))
    with pytest.raises(ValueError, match="xyzw"):
        QuatToEuler(quat_order="zyxw")


def test_relative_frame_env_pose_identity_at_reset_and_actions_in_reset_frame():
    env = TransformedEnv(ToyArmEnv(seed=3), RelativeFrame())
    check_env_specs(env)
    td = env.reset()
    torch.testing.assert_close(td["tcp_pose"], torch.tensor([0.0, 0, 0, 1, 0, 0, 0]), atol=1e-6, rtol=0)
    origin = td["tcp_pose_origin"]
    # a +x step in the relative frame moves the arm along the reset frame's x axis in the base frame
    action = torch.tensor([1.0, 0, 0, 0, 0, 0, 0])
    out = env.step(td.set("action", action))
    base_pos = env.base_env.pos
    expected_base = origin[:3] + quat_rotate(to_xyzw(origin[3:], "wxyz"), torch.tensor([0.1, 0, 0]))
    torch.testing.assert_close(base_pos, expected_base, atol=1e-6, rtol=0)
    # ... and in the relative frame the pose moved by exactly +0.1 m in x, velocity is +1 m/s in x
    torch.testing.assert_close(out["next", "tcp_pose"][:3], torch.tensor([0.1, 0, 0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["next", "tcp_vel"][:3], torch.tensor([1.0, 0, 0]), atol=1e-5, rtol=0)
    assert torch.equal(out["action"], action)  # the stored action stays in the policy's frame
    assert torch.equal(out["next", "tcp_pose_origin"], origin)


def test_relative_frame_rotation_action_roundtrip_and_batch_forward():
    env = TransformedEnv(ToyArmEnv(seed=1), RelativeFrame())
    td = env.reset()
    rot = torch.tensor([0, 0, 0, 0.0, 0, 1.0, 0])  # rotate about the relative z axis
    td = env.step(td.set("action", rot))["next"]
    q_rel = td["tcp_pose"][3:]
    expected = quat_from_axis_angle(torch.tensor([0.0, 0, 1]), torch.tensor(0.2))
    torch.testing.assert_close(q_rel, expected, atol=1e-6, rtol=0)
    # forward on a raw batch gives the same relative pose as the env path
    raw = TensorDict(tcp_pose=torch.cat([env.base_env.pos, env.base_env.quat]), tcp_vel=env.base_env.vel.clone(),
                     tcp_pose_origin=td["tcp_pose_origin"])
    out = RelativeFrame()(raw)
    torch.testing.assert_close(out["tcp_pose"], td["tcp_pose"], atol=1e-6, rtol=0)
    with pytest.raises(KeyError, match="tcp_pose_origin"):
        RelativeFrame()(TensorDict(tcp_pose=torch.zeros(7)))


def test_gripper_penalty_on_env_and_batch():
    env = TransformedEnv(ToyArmEnv(), GripperPenalty(penalty=0.1, gripper_key="gripper", index=0))
    check_env_specs(env)
    td = env.reset()
    rewards, penalties = [], []
    for g in [1.0, 1.0, -1.0, -1.0, 1.0]:  # toggles at steps 0, 2, 4
        td.set("action", torch.tensor([0, 0, 0, 0, 0, 0, g]))
        out = env.step(td)
        raw_reward = -env.base_env.pos.norm()
        rewards.append(out["next", "reward"].item() - raw_reward.item())
        penalties.append(out["next", "gripper_penalty"].item())
        td = out["next"]
    assert penalties == pytest.approx([0.1, 0, 0.1, 0, 0.1])
    assert rewards == pytest.approx([-0.1, 0, -0.1, 0, -0.1], abs=1e-6)
    batch = TensorDict(
        observation=torch.tensor([[0.0] * 6 + [0.0], [0.0] * 6 + [1.0]]),
        next=TensorDict(observation=torch.tensor([[0.0] * 6 + [1.0], [0.0] * 6 + [1.0]]), reward=torch.ones(2, 1)),
        batch_size=[2],
    )
    out = GripperPenalty(penalty=0.5)(batch)
    assert out["next", "reward"].squeeze(-1).tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match="penalty"):
        GripperPenalty(penalty=-1)


def test_stack_of_transforms_passes_check_env_specs():
    env = TransformedEnv(ToyArmEnv(), Compose(RelativeFrame(), QuatToEuler(), GripperPenalty(gripper_key="gripper", index=0)))
    check_env_specs(env)


def test_gripper_penalty_on_sim_state_env():
    from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv

    env = TransformedEnv(PandaPickCubeEnv(seed=0), GripperPenalty(penalty=0.1, index=3))  # state obs: gripper at 3
    check_env_specs(env)
    td = env.reset()
    penalties = []
    for g in [1.0, 0.0, -1.0, -1.0]:  # close (toggle), hold, open (toggle), stay open
        out = env.step(td.set("action", torch.tensor([0.0, 0.0, 0.0, g])))
        penalties.append(out["next", "gripper_penalty"].item())
        td = out["next"]
    assert penalties == pytest.approx([0.1, 0.0, 0.1, 0.0])
    env.close()


def test_relative_frame_batched_env_partial_reset_keeps_other_origins():
    from tensordict import TensorDict
    from torchrl.envs import SerialEnv

    env = TransformedEnv(SerialEnv(2, [lambda: ToyArmEnv(seed=0), lambda: ToyArmEnv(seed=1)]), RelativeFrame())
    check_env_specs(env)
    td = env.reset()
    origin = td["tcp_pose_origin"].clone()
    td = env.step(td.set("action", torch.full((2, 7), 0.5)))["next"]
    td.set("_reset", torch.tensor([[True], [False]]))
    out = env.reset(td)
    assert not torch.equal(out["tcp_pose_origin"][0], origin[0])  # env 0 restarted: new origin
    assert torch.equal(out["tcp_pose_origin"][1], origin[1])  # env 1 kept its episode's origin
    torch.testing.assert_close(out["tcp_pose"][0], torch.tensor([0.0, 0, 0, 1, 0, 0, 0]), atol=1e-6, rtol=0)
    assert out["tcp_pose"][1, :3].norm() > 0.05  # env 1 still relative to its old origin, having moved
    env.close()
