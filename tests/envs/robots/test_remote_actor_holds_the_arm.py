"""A remote actor on an arm (franky-sim, a MuJoCo Franka speaking libfranka's protocol, built by
``make_arm_env`` as ``--role actor`` builds it) holds the arm still once its learner is silent, and
drives it again when a learner answers on the same port."""
import threading

import numpy as np
import pytest

from torchrl_serl.modules import make_sac_actor
from torchrl_serl.training.config import EnvConfig, RobotConfig
from torchrl_serl.training.distributed import LearnerLink, RemoteActor
from torchrl_serl.training.env_factory import make_arm_env

pytestmark = pytest.mark.robots
SECRET = "a-shared-secret-of-enough-length"


def wait_for(actor: RemoteActor, thread: threading.Thread, predicate, what: str, timeout_s: float = 120) -> None:
    done = threading.Event()
    deadline = threading.Timer(timeout_s, done.set)  # a generous bound on a loaded machine
    deadline.start()
    try:
        while not predicate(actor.stats):
            assert thread.is_alive(), f"the actor stopped: {actor.stats}"
            assert not done.wait(0.02), f"timed out waiting for {what}: {actor.stats}"
    finally:
        deadline.cancel()


def arm_of(env):
    while not hasattr(env, "arm"):
        env = env.base_env
    return env.arm


def test_a_remote_actor_holds_the_arm_while_its_learner_is_away(franky_sim):
    robot = RobotConfig(real=True, address=franky_sim, camera="test_pattern", realtime=False)

    def make_env():
        return make_arm_env(robot, EnvConfig(pixels=False), seed=0)

    probe = make_env()
    obs_dim, action_dim = probe.observation_spec["observation"].shape[-1], probe.action_spec.shape[-1]
    probe.close()
    first = LearnerLink("127.0.0.1", 0, secret=SECRET)
    port = first.port
    first.publish_weights(make_sac_actor(obs_dim, action_dim), 1)
    # random actions all along: the arm moves at every step it takes
    actor = RemoteActor(make_env, make_sac_actor(obs_dim, action_dim), host="127.0.0.1", port=port, secret=SECRET,
                        frames_per_batch=2, timeout_s=0.5, reconnect_every_s=0.05, init_random_frames=10**9,
                        max_learner_silence_s=0.5, seed=0)
    thread = threading.Thread(target=actor.run, daemon=True)
    thread.start()
    second = None
    try:
        wait_for(actor, thread, lambda s: s["acked"] >= 2 and s["weights_version"] == 1, "the arm acting")
        first.close()  # the learner goes away
        wait_for(actor, thread, lambda s: s["holding"], "the actor to hold")
        arm = arm_of(actor.collector.env)
        # settled on its last target: waited on the arm's own velocity, not on a time
        wait_for(actor, thread, lambda s: np.linalg.norm(arm.get_state().tcp_vel) < 1e-3,
                 "the arm to settle on its last target")
        frames, before = actor.stats["frames"], arm.get_state().tcp_pos
        failed = actor.stats["link_errors"]
        wait_for(actor, thread, lambda s: s["link_errors"] >= failed + 3, "more unanswered calls")
        after = arm.get_state().tcp_pos
        # no new step reached the arm, and it stands still (within 1 mm) at its last target
        assert actor.stats["holding"] and actor.stats["frames"] == frames
        assert np.linalg.norm(after - before) < 1e-3, (before, after)

        second = LearnerLink("127.0.0.1", port, secret=SECRET)  # a restarted learner on the same port
        second.publish_weights(make_sac_actor(obs_dim, action_dim), 2)
        wait_for(actor, thread, lambda s: not s["holding"] and s["weights_version"] == 2, "the new learner's weights")
        wait_for(actor, thread, lambda s: s["frames"] >= frames + 6, "the arm acting again")
        assert np.linalg.norm(arm.get_state().tcp_pos - after) > 1e-3  # and it moves again
    finally:
        actor.stop()
        thread.join(60)
        for link in (first, second):
            if link is not None:
                link.close()
    assert not thread.is_alive() and actor.stats["holds"] == 1
