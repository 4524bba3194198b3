"""Step-period jitter of the real-arm control loop against the test doubles.

Runs ``PiperEnv`` (real piper-sdk on python-can's virtual bus, against the CAN double),
``FrankaEnv`` (franky against franky-sim on loopback) and ``RealArmEnv`` over ``RemoteArm``
(ZMQ robot server wrapping the Piper double), each with two 128x128 test-pattern cameras, at
``--hz``, and prints the measured step period: mean, std, p99, max, and the share of steps
more than 10 % late.

    python benchmarks/bench_robot_loop.py --steps 200 --hz 10
"""
from __future__ import annotations

import argparse
import os
import sys
import uuid

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "envs", "robots"))  # piper_double, franky-sim launcher


def test_pattern_cameras() -> dict:
    """The ``front`` and ``wrist`` test-pattern cameras every benchmark arm uses (640x480 at 30 fps,
    a RealSense's default; the env resizes them to the policy's 128x128)."""
    from torchrl_serl.envs.cameras import TestPatternCamera

    return {"front": TestPatternCamera(seed=0), "wrist": TestPatternCamera(seed=1)}


def _run(env, steps: int) -> np.ndarray:
    """Random actions for ``steps`` steps (resetting at episode ends); periods [s]."""
    td = env.reset()
    env.step_periods_s.clear()
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        action = torch.rand(4, generator=gen) * 2 - 1
        td = env.step(td.set("action", action * torch.tensor([0.3, 0.3, 0.3, 1.0])))["next"]
        if bool(td["done"]):
            td = env.reset()  # restarts the tick grid: the reset is not counted as a step
    return np.array(env.step_periods_s)


def bench_piper(steps: int, hz: float) -> np.ndarray:
    from piper_double import PiperDouble

    from torchrl_serl.envs.robots.arm_env import PiperEnv

    channel = f"bench-{uuid.uuid4().hex[:6]}"
    double = PiperDouble(channel).start()
    env = PiperEnv(channel, bustype="virtual", cameras=test_pattern_cameras(), control_hz=hz, max_episode_steps=10**6, seed=0)
    try:
        return _run(env, steps)
    finally:
        env.close()
        double.close()


def bench_remote_piper(steps: int, hz: float) -> np.ndarray:
    from piper_double import PiperDouble

    from torchrl_serl.envs.robots.arm_env import PIPER_HOME_Q, RealArmEnv
    from torchrl_serl.envs.robots.piper import PiperArm
    from torchrl_serl.envs.robots.remote import RemoteArm
    from torchrl_serl.envs.rotations import euler_xyz_to_quat
    from torchrl_serl.envs.robots.safety import SafetyLimits
    from torchrl_serl.envs.robots.server import ArmServer

    channel = f"bench-{uuid.uuid4().hex[:6]}"
    double = PiperDouble(channel).start()
    arm = PiperArm(channel, bustype="virtual")
    arm.connect()
    server = ArmServer(arm, "tcp://127.0.0.1:*").start()
    remote = RemoteArm(server.endpoint)
    remote.connect()
    safety = SafetyLimits(box_low_m=(0.1, -0.2, 0.1), box_high_m=(0.35, 0.2, 0.4),
                          reference_quat=euler_xyz_to_quat([np.pi, np.deg2rad(43.4), np.pi]))
    env = RealArmEnv(remote, safety, cameras=test_pattern_cameras(), home_q=PIPER_HOME_Q, control_hz=hz,
                     max_episode_steps=10**6, seed=0)
    try:
        return _run(env, steps)
    finally:
        env.close()
        server.close()
        arm.disconnect()
        double.close()


def bench_franka(steps: int, hz: float) -> np.ndarray:
    from franky_sim_server import start_franky_sim, stop_franky_sim

    from torchrl_serl.envs.robots.arm_env import FrankaEnv

    host, proc = start_franky_sim()
    try:
        env = FrankaEnv(host, realtime=False, cameras=test_pattern_cameras(), control_hz=hz, max_episode_steps=10**6,
                        arm_kwargs={"relative_dynamics_factor": 0.6}, seed=0)
        try:
            return _run(env, steps)
        finally:
            env.close()
    finally:
        stop_franky_sim(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--only", choices=["piper", "remote-piper", "franka"], nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    benches = {"piper": bench_piper, "remote-piper": bench_remote_piper, "franka": bench_franka}
    period = 1.0 / args.hz
    print(f"{args.steps} steps at {args.hz:g} Hz (target period {period * 1e3:.1f} ms), two 128x128 cameras")
    print(f"{'double':<14}{'mean ms':>9}{'std ms':>9}{'p99 ms':>9}{'max ms':>9}{'>10% late':>11}")
    for name in args.only or benches:
        p = benches[name](args.steps, args.hz) * 1e3
        late = np.mean(p > period * 1e3 * 1.1) * 100
        print(f"{name:<14}{p.mean():>9.2f}{p.std():>9.2f}{np.percentile(p, 99):>9.2f}{p.max():>9.2f}{late:>10.1f}%")


if __name__ == "__main__":
    main()
