"""Bytes on the wire per env step across the actor/learner link: the state task (PandaPickCube), or
with ``--pixels`` its two 128x128 cameras (DrQ policy, ResNet-10) and ``--image_codec``.

A ``RemoteActor`` steps the state task of ``recipes/async_sac.py`` (its default env, SAC actor and
``frames_per_batch``), or the pixel task with drq.py's policy, at a held control rate against a ``LearnerLink`` on 127.0.0.1 with a secret
(CURVE), through a TCP relay that counts every byte both ways: ZMTP framing, CURVE boxes and
the link's own frames included. Two phases:

1. The learner publishes no weights: ``up`` (actor -> learner: transition batches, requests) and
   ``down`` (answers, the ``weights_poll_s`` heartbeat) per env step.
2. The learner publishes new weights as soon as the actor acts with the previous ones:
   ``weights`` = bytes down per publication fetched, less phase 1's ``down`` for the same steps.

So one env step costs ``up + down + weights x (publications fetched per env step)``; the last
term is set by the recipe's ``--push_every`` and the learner's speed, and is at most one fetch per
``frames_per_batch`` env steps (the actor takes new weights between batches, and fetches no more).

    OMP_NUM_THREADS=1 python benchmarks/bench_link_bytes.py --frames 300 --hz 10
    MUJOCO_GL=egl python benchmarks/bench_link_bytes.py --pixels --image_codec png --publications 3
"""
from __future__ import annotations

import argparse
import socket
import threading
import time

import torch
from torchrl.envs import Transform, TransformedEnv

from torchrl_serl.security import new_secret
from torchrl_serl.training.agent_factory import make_drq_agent, make_sac_agent
from torchrl_serl.training.config import DrQConfig, EnvConfig, SACConfig
from torchrl_serl.training.distributed import LearnerLink, RemoteActor, batch_to_bytes
from torchrl_serl.training.env_factory import make_sim_env


class HoldRate(Transform):
    """Holds the env to ``hz`` steps per second, as a real arm's control loop does."""

    def __init__(self, hz: float):
        super().__init__()
        self.period_s = 1.0 / hz
        self._next = None

    def _step(self, tensordict, next_tensordict):
        now = time.monotonic()
        self._next = now if self._next is None or self._next < now - self.period_s else self._next
        self._next += self.period_s
        time.sleep(max(0.0, self._next - now))
        return next_tensordict


class CountingRelay:
    """Forwards TCP connections from its port to ``target_port``, counting the bytes each way."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.up = self.down = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self._server.accept()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "down"), daemon=True).start()

    def _pump(self, src, dst, direction):
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                with self._lock:
                    setattr(self, direction, getattr(self, direction) + len(data))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.up, self.down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="env steps of phase 1")
    parser.add_argument("--publications", type=int, default=20, help="weight publications of phase 2")
    parser.add_argument("--hz", type=float, default=10.0, help="control rate held by the actor")
    parser.add_argument("--frames_per_batch", type=int, default=10)
    parser.add_argument("--weights_poll_s", type=float, default=0.1)
    parser.add_argument("--pixels", action="store_true", help="the pixel task (front, wrist 128x128) and DrQ policy")
    parser.add_argument("--image_codec", default="none", choices=["none", "png", "jpeg"])
    args = parser.parse_args()
    if args.hz <= 0:
        parser.error(f"--hz must be > 0, got {args.hz}")
    torch.set_num_threads(1)

    env_cfg = EnvConfig(pixels=args.pixels)
    probe = make_sim_env(env_cfg, 0)
    obs_dim, action_dim = probe.observation_spec["observation"].shape[-1], probe.action_spec.shape[-1]
    probe.close()

    def make_policy():
        torch.manual_seed(0)  # the same frozen trunk on both sides (the actor checks it)
        if args.pixels:
            return make_drq_agent(DrQConfig(), ("front", "wrist"), env_cfg.image_size, obs_dim, action_dim).policy
        return make_sac_agent(SACConfig(), obs_dim, action_dim).actor

    learner_policy = make_policy()
    codec = None if args.image_codec == "none" else args.image_codec
    secret = new_secret()
    link = LearnerLink("127.0.0.1", 0, secret=secret)
    relay = CountingRelay(link.port)
    # built and run in one thread: the pixel env's EGL context belongs to the thread that made it
    ready, stats, holder = threading.Event(), {}, {}

    def act() -> None:
        holder["actor"] = RemoteActor(
            lambda: TransformedEnv(make_sim_env(env_cfg, 0), HoldRate(args.hz)),
            make_policy(), host="127.0.0.1", port=relay.port, secret=secret,
            frames_per_batch=args.frames_per_batch, weights_poll_s=args.weights_poll_s, seed=0, image_codec=codec,
        )
        ready.set()
        stats.update(holder["actor"].run())

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    if not ready.wait(600):
        raise SystemExit("the actor did not start")
    actor = holder["actor"]

    def wait(predicate, what, timeout_s=600):
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline or not thread.is_alive():
                raise SystemExit(f"timed out waiting for {what}: {actor.stats}")
            time.sleep(0.01)

    # phase 1: no weights published; counted from the first acknowledged batch (connection set up)
    wait(lambda: actor.stats["acked"] >= 1, "the first acknowledged batch")
    up0, down0 = relay.counts()
    acked0 = actor.stats["acked"]
    wait(lambda: actor.stats["acked"] >= acked0 + args.frames // args.frames_per_batch, "phase 1")
    up1, down1 = relay.counts()
    steps1 = (actor.stats["acked"] - acked0) * args.frames_per_batch
    up_step, down_step = (up1 - up0) / steps1, (down1 - down0) / steps1

    # phase 2: a new version each time the actor acts with the previous one
    frames2 = actor.stats["frames"]
    for version in range(1, args.publications + 1):
        with torch.no_grad():
            for param in learner_policy.parameters():
                if param.requires_grad:  # a learner step: the frozen trunk stays as it is
                    param.add_(1e-3)
        link.publish_weights(learner_policy, version)
        wait(lambda: actor.stats["weights_version"] == version, f"weights version {version}")
    up2, down2 = relay.counts()
    steps2 = actor.stats["frames"] - frames2
    weights_bytes = (down2 - down1 - down_step * steps2) / args.publications
    actor.stop()
    thread.join(60)
    link.close()
    last = link.pull()[-1]
    batch_payload, raw_payload = len(batch_to_bytes(last, codec)), len(batch_to_bytes(last))

    print(f"{'pixel task (front, wrist 128x128), image codec ' + args.image_codec if args.pixels else 'state task'}, "
          f"{args.hz:g} Hz, frames_per_batch {args.frames_per_batch}, weights_poll_s "
          f"{args.weights_poll_s:g}, CURVE; {steps1} env steps in phase 1, {args.publications} publications\n")
    print("| figure | bytes |")
    print("| --- | --- |")
    print(f"| up per env step (actor -> learner) | {up_step:.0f} |")
    print(f"| down per env step, weights unchanged | {down_step:.0f} |")
    print(f"| weights per publication fetched | {weights_bytes:.0f} |")
    print(f"| transition batch payload per env step (torch.save archive) | {batch_payload / args.frames_per_batch:.0f} |")
    print(f"| the same, frames raw | {raw_payload / args.frames_per_batch:.0f} |")
    print(f"\nactor stats: {stats}")


if __name__ == "__main__":
    main()
