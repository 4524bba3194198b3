"""BackgroundEvaluator: the synchronous evaluation's results, from a process of its own."""

import functools
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from torchrl_serl.modules.sac_networks import make_sac_actor
from torchrl_serl.training.background_evaluator import BackgroundEvaluator
from torchrl_serl.training.config import EnvConfig
from torchrl_serl.training.env_factory import make_sim_env
from torchrl_serl.training.evaluation import evaluate

ENV = EnvConfig(task="panda", max_episode_steps=15)
make_eval_env = functools.partial(make_sim_env, ENV, 7)


def _policy(seed):
    torch.manual_seed(seed)
    env = make_eval_env()
    actor = make_sac_actor(env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1], hidden=(32,))
    env.close()
    return actor


def _perturb(policy, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g))


def test_results_are_the_synchronous_ones_of_the_snapshot_at_each_step():
    policy = _policy(0)
    evaluator = BackgroundEvaluator(make_eval_env, policy, num_episodes=2, idle_time_only=False)
    try:
        snapshots = []
        for step in (100, 200):
            evaluator.submit(step, policy)  # the weights of now...
            snapshots.append({k: v.clone() for k, v in policy.state_dict().items()})
            _perturb(policy, step)  # ...not those that training makes next
        background = dict(evaluator.wait(timeout_s=300))
    finally:
        evaluator.close()
    assert evaluator.pending == []
    env = make_eval_env()  # the same env and seed, evaluated in sequence as the process did
    reference = _policy(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step, state in zip((100, 200), snapshots):
            reference.load_state_dict(state)
            assert background[step] == evaluate(env, reference, 2)
    finally:
        torch.set_num_threads(threads)
        env.close()
    # the two snapshots differ, so equal results are not a coincidence of one policy
    assert any(not torch.equal(snapshots[0][k], snapshots[1][k]) for k in snapshots[0])


def _failing_env():
    raise OSError("no camera at /dev/video9")


def test_a_failing_evaluation_process_is_reported_with_its_error():
    evaluator = BackgroundEvaluator(_failing_env, _policy(0), num_episodes=1, idle_time_only=False)
    try:
        with pytest.raises(RuntimeError, match="no camera at /dev/video9"):
            evaluator.submit(5, _policy(0))  # raises here if the process has already exited
            evaluator.wait(timeout_s=120)
    finally:
        evaluator.close()


def test_close_drops_pending_evaluations_and_stops_the_process():
    policy = _policy(0)
    evaluator = BackgroundEvaluator(functools.partial(make_sim_env, EnvConfig(max_episode_steps=100), 7), policy, 50)
    evaluator.submit(1, policy)
    evaluator.close()
    assert not evaluator._process.is_alive()
    assert evaluator.pending == []


def test_the_evaluation_process_runs_on_idle_time_only():
    """By default the episodes take only the CPU time the learner and the actor leave."""
    evaluator = BackgroundEvaluator(make_eval_env, _policy(0), num_episodes=1)
    try:
        evaluator.submit(1, _policy(0))
        evaluator.wait(timeout_s=300)  # the process has set its policy before it took any request
        assert os.sched_getscheduler(evaluator._process.pid) == os.SCHED_IDLE
    finally:
        evaluator.close()


def test_bad_episode_count_is_refused():
    with pytest.raises(ValueError, match="num_episodes"):
        BackgroundEvaluator(make_eval_env, _policy(0), num_episodes=0)


def test_the_evaluation_process_exits_when_its_owner_is_killed(tmp_path):
    """A SIGKILLed learner leaves no evaluation process behind."""
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import functools, os, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_background_evaluator import _policy, make_eval_env
        from torchrl_serl.training.background_evaluator import BackgroundEvaluator
        if __name__ == "__main__":
            evaluator = BackgroundEvaluator(make_eval_env, _policy(0), num_episodes=1, idle_time_only=False)
            print(evaluator._process.pid, flush=True)
            time.sleep(600)
    """))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(owner.stdout.readline())
    owner.kill()
    owner.wait()
    # the child notices within its 1 s poll; wait on its state, up to a generous bound
    for _ in range(600):
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
