"""DrQ from pixels on the pick-cube task: the simulated Panda or Piper, or the real arm (SERL's
``async_drq_sim`` and its real-robot examples), with the actor and the learner side by side.

The arm is ``--env.task panda`` (Franka Panda/FR3, default) or ``--env.task piper`` (AgileX Piper):
its simulated twin by default, the real arm with ``--robot.real true`` (Franka: franky/libfranka at
``--robot.address <FCI host>``; Piper: piper-sdk on the CAN channel ``--robot.address can0``), images
from two cameras (``--robot.camera realsense --robot.camera_ids <front_serial>,<wrist_serial>``) and,
with ``--intervention spacemouse``, a human correcting the policy (interventions go to the demo side,
HIL-SERL style); ``--robot.reward_classifier clf.pt`` (``train_reward_classifier.py``'s output)
judges success from the cameras in the actor's process (SERL's learned reward). With
``--grasp_critic true`` the gripper command comes from HIL-SERL's DQN grasp critic instead of the
SAC actor.

Two 128x128 cameras (``front``, ``wrist``) + the 7-D state go through a frozen ResNet-10 (pass
SERL's pretrained weights with ``--drq.pretrained_path``; nothing is downloaded) shared by actor
and critic; images are randomly shifted inside the loss. A learner step is one sample split into
``drq.utd_ratio`` minibatches, critic updates on all but the last, one full update on the last
(SERL's ratio 4); ``--updates_per_step`` of them per env step (SERL: 1). With ``--demos <dir>``
every batch is half demos (RLPD).

The actor (the env or the arm, its cameras, the intervention device, the policy) runs in a process
of its own and never waits for the learner: its batches queue up while the learner trains, and the
learner's newest weights reach it after every learner round. In simulation the actor is held one
batch ahead of the learner, so the ratio of learner steps to env steps is exactly
``--updates_per_step``; on a real arm the control rate sets the pace, the learner trains whenever it
is behind that ratio (never ahead of the data), and ``train/updates_per_step`` logs the ratio it
achieved. If the learner dies, the actor stops the arm within ``--frames_per_batch`` steps. In
simulation ``--actors N`` runs N actor processes, each its own simulation, all fed the same weights
(held N batches ahead). Evaluations (``--eval_every``, simulation) run in a process of their own on a
snapshot of the weights at their step (``BackgroundEvaluator``), so neither learner nor actor waits
for them; each is logged at its step when it finishes.

``--role learner`` (GPU box) and ``--role actor`` (robot PC) put the two on different machines,
linked by ZeroMQ + CURVE on ``--port`` with a shared secret (docs/distributed.md): the actor sends
its steps with the camera frames compressed (``--image_codec png``, each distinct frame once), the
learner encodes them with its own frozen trunk and sends back the weights it trains (the frozen trunk
stays on each side, checked to be the same). A simulated remote actor is held a batch ahead of the
learner's ratio as the local one is. Interventions and the reward classifier run on the
actor (give the learner the same ``--intervention``: it routes them to the demo side);
``--resume true`` restarts the learner while the actor acts on and reconnects.

    python recipes/drq.py --demos demos/panda_pixels
    python recipes/drq.py --env.image_size 64 --drq.encoder small   # cheaper on a CPU
    python recipes/drq.py --env.task piper                          # the simulated Piper
    python recipes/drq.py --actors 2                                # two simulations feed one learner
    python recipes/drq.py --env.task piper --robot.real true --robot.address can0 \\
        --demos demos/piper_real --intervention spacemouse --robot.reward_classifier runs/clf/classifier.pt
    python recipes/drq.py --robot.real true --robot.address 172.16.0.2 \\
        --demos demos/franka_real --intervention spacemouse --grasp_critic true
    python recipes/drq.py --role learner --host 0.0.0.0 --device cuda --secret_file ~/.torchrl_serl_secret \\
        --drq.pretrained_path resnet10.pt --demos demos/franka_real --robot.real true        # GPU box
    python recipes/drq.py --role actor --host <gpu-box> --secret_file ~/.torchrl_serl_secret \\
        --drq.pretrained_path resnet10.pt --robot.real true --robot.address 172.16.0.2       # robot PC
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch.distributed as dist
import torch.multiprocessing as mp
from torchrl.envs import TransformedEnv

from torchrl_serl import precision
from torchrl_serl.data.intervention_router import InterventionRouter
from torchrl_serl.data.replay_factory import make_demo_replay_buffer, make_pixel_replay_buffer, online_size, transitions
from torchrl_serl.envs.input_devices.keyboard import TerminalKeyReader
from torchrl_serl.envs.transforms.gripper_penalty import GripperPenalty
from torchrl_serl.envs.transforms.intervention import Intervention
from torchrl_serl.modules.encoders.cached_features import feature_key
from torchrl_serl.optim import make_optimizer
from torchrl_serl.training.agent_factory import make_drq_agent, make_trunk_features
from torchrl_serl.security import load_secret
from torchrl_serl.training.checkpoint import (
    GracefulStop,
    RunCheckpointer,
    checkpoint_directories,
    parameters_checksum,
)
from torchrl_serl.training.background_collector import BackgroundCollector
from torchrl_serl.training.config import (
    ROLES,
    ActorLearnerConfig,
    DrQConfig,
    EnvConfig,
    RobotConfig,
    RunConfig,
    apply_overrides,
    build_parser,
    config_to_dict,
)
from torchrl_serl.training.ddp import DDPSACUpdater, init_ddp_from_env
from torchrl_serl.training.distributed import (
    POLICY_VERSION_KEY,
    LearnerLink,
    RemoteActor,
    act_until_stopped,
    weights_dtype_named,
)
from torchrl_serl.training.env_factory import make_env, make_intervention_source
from torchrl_serl.training.background_evaluator import BackgroundEvaluator
from torchrl_serl.training.frame_codec import CODECS
from torchrl_serl.training.logging import EpisodeTracker, RunLogger
from torchrl_serl.training.process_priority import raise_process_niceness
from torchrl_serl.training.run_counters import RunCounters
from torchrl_serl.training.seeding import seed_everything
from torchrl_serl.training.sim_cache import cached_pretrained_trunk, cached_scripted_demos
from torchrl_serl.training.updater import GraspCriticUpdater, SACUpdater, make_sac_optimizers

CAMERAS = ("front", "wrist")
ACTOR_SEED_STRIDE = 3_000_000  # actor i's seeds start at seed + i * stride (the eval env: + 1e6, demos: + 2e6)
_INTERVENTIONS = ("none", "spacemouse", "keyboard")
ACTOR_ALIVE_S = 5.0  # a remote actor heard from within this many seconds counts as feeding the learner
ACTOR_UNACKED_BATCHES = 2  # a simulated remote actor waits while this many batches wait for the learner


@dataclass
class Config(RunConfig, ActorLearnerConfig):
    buffer_size: int = 200_000
    env: EnvConfig = field(default_factory=lambda: EnvConfig(pixels=True))
    drq: DrQConfig = field(default_factory=DrQConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)
    demos: str = ""
    """Demo directory (``record_demos.py --env.pixels true``); empty: no demos."""
    demo_fraction: float = 0.5
    prefetch: bool = True
    """With ``--demos``: draw the learner's next sample in a background thread while it trains on
    this one, as SERL's learner does (``OnlineDemoReplayBuffer(prefetch=True)``; each sample then
    comes from the buffer as it was one actor batch earlier)."""
    intervention: str = "none"
    """Human intervention device while training (``none``, ``spacemouse``, ``keyboard``); needs ``--demos``:
    intervened steps are added to the demo side."""
    preset: str = "auto"
    """``serl``: SERL's configuration as is (on CUDA with whole-update CUDA graphs); ``cpu``: what
    learns on a 2-core CPU in under an hour (docs/results.md, PandaPickCube to 30k env steps: ~40
    min on AVX-512 in bf16, 45-64 min on AVX2 in float32): a ResNet-10 pretrained here on simulated
    frames (``--drq.pretrained_path auto``), cached trunk features of 2 views, bfloat16 autocast in
    the learner and 0.15 learner steps per env step where the CPU has native bfloat16 (``--bf16``,
    :mod:`torchrl_serl.precision`), float32 and 0.1 learner steps per env step elsewhere, 20
    scripted demos (``--demos auto``, simulation).
    ``auto``: ``serl`` when CUDA is available, else ``cpu``. Options given on the command line
    override the preset."""
    actors: int = 1
    """Actor processes feeding the learner, each its own simulation (seeded apart) and each receiving
    the weights; simulation only (several real arms: one ``--robot.address`` each, not yet)."""
    frames_per_batch: int = 10
    """Env steps per actor batch: the unit in which steps reach the learner (and, in simulation,
    the most the actor runs ahead of it); a dead learner stops the actor within one batch."""
    updates_per_step: float = 1.0
    """Learner steps (each ``drq.utd_ratio`` critic updates) per env step from ``training_starts``
    on; SERL: 1. The learner never runs ahead of it; on a real arm it may fall behind (logged as
    ``train/updates_per_step``)."""
    grasp_critic: bool = False
    """HIL-SERL's hybrid agent, for the real arms: SAC learns the arm's motion, a DQN grasp critic
    (an MLP head on the shared encoder) picks the gripper command (open / stay / close) and trains
    in every critic update. Its reward is charged ``grasp_penalty`` for each command that toggles the
    gripper (``GripperPenalty`` judged by the command); the SAC reward is left as it is."""
    grasp_critic_hidden: tuple[int, ...] = (128, 128)
    """Hidden widths of the grasp critic's head (HIL-SERL: 128, 128)."""
    grasp_penalty: float = 0.02
    """Charged to the grasp critic's reward per gripper toggle (HIL-SERL: 0.02)."""
    push_every: int = 1
    """Learner steps between weight pushes to the actor (the newest weights go out after each learner
    round once this many steps were made; SERL publishes every 50). Across machines each push is the
    policy's trained weights (~9.7 MB for DrQ): raise it on a slow link."""
    learner_nice: int = 10
    """Real arm with the learner on the same machine (``--role local``): once the actor process
    runs, the learner process raises its niceness to this (0-19), so the arm's control loop gets a
    core first whenever both want one (docs/distributed.md, control timing); 0: off. Simulation
    ignores it."""
    image_codec: str = "png"
    """How camera frames cross the link (``--role actor``): ``png`` (lossless), ``jpeg`` (quality 90)
    or ``none`` (raw); each distinct frame is sent once."""
    ddp: bool = False
    """Data-parallel learner (``DDPSACUpdater``), simulation only: ``torchrun --nproc_per_node N
    recipes/drq.py --ddp true``. Each rank steps its own simulation (seed + rank) and samples its own
    batches; gradients are averaged over ranks (``N * drq.batch_size`` transitions per critic update).
    Rank 0 logs, evaluates and checkpoints in ``<exp_name>``, rank r its own buffer in
    ``<exp_name>_rank<r>``. Without torchrun: one rank."""


def main(argv=None) -> None:
    cfg = parse_with_preset(argv)
    if cfg.intervention not in _INTERVENTIONS:
        raise ValueError(f"--intervention must be one of {_INTERVENTIONS}, got {cfg.intervention!r}")
    if cfg.intervention != "none" and not cfg.demos and cfg.role != "actor":  # the learner holds the demos
        raise ValueError("--intervention needs --demos: intervened steps are stored on the demo side")
    if not cfg.env.pixels:
        raise ValueError("DrQ learns from pixels: --env.pixels must be true")
    if cfg.role not in ROLES:
        raise ValueError(f"--role must be one of {ROLES}, got {cfg.role!r}")
    if cfg.image_codec not in ("none", *CODECS):
        raise ValueError(f"--image_codec must be one of none, {', '.join(CODECS)}; got {cfg.image_codec!r}")
    if cfg.role != "local" and (cfg.ddp or cfg.actors > 1 or cfg.grasp_critic):
        raise ValueError(f"--role {cfg.role}: one actor and one learner process (no --ddp, --actors or --grasp_critic)")
    if cfg.push_every < 1:
        raise ValueError(f"--push_every must be >= 1, got {cfg.push_every}")
    if not 0 <= cfg.learner_nice <= 19:
        raise ValueError(f"--learner_nice must be in [0, 19], got {cfg.learner_nice}")
    if cfg.actors < 1:
        raise ValueError(f"--actors must be >= 1, got {cfg.actors}")
    if cfg.actors > 1 and (cfg.robot.real or cfg.intervention != "none"):
        raise ValueError("--actors > 1 runs several simulations: one real arm, or one intervention device, is one actor")
    if cfg.ddp and cfg.robot.real:
        raise ValueError("--ddp runs one simulation per rank; a real arm trains with one learner process")
    if cfg.ddp and cfg.grasp_critic:
        raise ValueError("--ddp averages the SAC learner's gradients only: train the grasp critic without --ddp")
    exp_name = cfg.exp_name or f"drq_{cfg.env.task}{'_real' if cfg.robot.real else ''}_seed{cfg.seed}"
    cached = cfg.drq.feature_views > 0
    # simulation: the actor (process, or remote through the link) is held to the learner's ratio
    governed = not cfg.robot.real
    start_time = time.perf_counter()

    with ExitStack() as stack:
        rank, world_size, local_rank = 0, 1, 0
        if cfg.ddp:
            rank, world_size, local_rank = init_ddp_from_env("nccl" if cfg.device.startswith("cuda") else "gloo")
            stack.callback(dist.destroy_process_group)
            if cfg.device.startswith("cuda"):
                cfg.device = f"cuda:{local_rank}"
            exp_name += f"_rank{rank}" if rank else ""
            print(f"data-parallel learner: rank {rank} of {world_size} on {cfg.device}", flush=True)
        seed_everything(cfg.seed)  # the same networks on every rank
        env_seed = cfg.seed + rank  # a different simulation on each

        if rank > 0:
            dist.barrier()  # rank 0 fills the trunk and demo caches; the other ranks then read them
        if cfg.drq.pretrained_path == "auto":
            cfg.drq.pretrained_path = str(cached_pretrained_trunk(cfg.env, seed=cfg.seed))
        if cfg.demos == "auto":
            if cfg.robot.real:
                raise ValueError("--demos auto records scripted demos in the simulation; on a real arm pass a demo folder")
            cfg.demos = str(cached_scripted_demos(cfg.env, episodes=20, seed=cfg.seed))
        if cfg.ddp and rank == 0:
            dist.barrier()

        link = None
        if cfg.role == "learner":  # bound first: a taken port fails at once
            link = LearnerLink(cfg.host, cfg.port, secret=load_secret(secret_file=cfg.secret_file or None),
                               weights_dtype=weights_dtype_named(cfg.weights_dtype))
            stack.callback(link.close)
        # the env's specs (the learner role: the simulated twin's, the arm is on the actor's machine),
        # then the agent (a cached-feature env needs the agent's frozen trunk); the actor builds its own env
        env = make_env(cfg.env, cfg.robot if cfg.role != "learner" else None, seed=env_seed, device=cfg.device)
        proprio_dim = env.observation_spec["observation"].shape[-1]
        action_dim = env.action_spec.shape[-1]
        env.close()
        agent = make_drq_agent(cfg.drq, CAMERAS, cfg.env.image_size, proprio_dim, action_dim, device=cfg.device,
                               grasp_critic_hidden=cfg.grasp_critic_hidden if cfg.grasp_critic else None)
        if cfg.ddp:
            seed_everything(env_seed)  # each rank explores with its own noise
        # with cached features the env encodes each frame once (TrunkFeatures) and the buffer
        # stores the features, not the images
        pixel_keys = tuple(feature_key(k) for k in CAMERAS) if cached else CAMERAS
        stored = functools.partial(transitions, drop_images=CAMERAS if cached else ())

        keys = None
        if cfg.intervention == "keyboard" and cfg.role != "learner":  # this process owns the terminal
            keys = mp.Queue()
            stack.enter_context(TerminalKeyReader(keys))
        if cfg.role == "actor":
            run_remote_actor(cfg, agent, env_seed, keys)
            return
        learner_batch = cfg.drq.batch_size * cfg.drq.utd_ratio  # one sample per learner step
        logger = RunLogger(
            cfg.logdir, exp_name, config=config_to_dict(cfg), total_steps=cfg.total_steps,
            use_wandb=cfg.wandb and rank == 0, wandb_mode=cfg.wandb_mode, wandb_project=cfg.wandb_project,
            progress=cfg.progress and rank == 0,
        )
        optimizers = make_sac_optimizers(agent.loss, cfg.drq, capturable=cfg.cudagraphs)
        if cfg.ddp:  # gradients averaged over the ranks
            updater = DDPSACUpdater(agent.loss, optimizers, agent.target_updater, cfg.drq.utd_ratio,
                                    device_ids=[local_rank] if cfg.device.startswith("cuda") else None,
                                    compile=cfg.compile, cudagraphs=cfg.cudagraphs, bf16=cfg.bf16,
                                    idle_optimizer_steps=cfg.drq.idle_optimizer_steps,
                                    actor_on_whole_sample=cfg.drq.actor_on_whole_sample)
        else:
            updater = SACUpdater(agent.loss, optimizers, agent.target_updater, cfg.drq.utd_ratio,
                                 compile=cfg.compile, cudagraphs=cfg.cudagraphs, bf16=cfg.bf16,
                                 idle_optimizer_steps=cfg.drq.idle_optimizer_steps,
                                 actor_on_whole_sample=cfg.drq.actor_on_whole_sample)
        grasp_components, grasp_updater = {}, None
        if agent.grasp is not None:
            grasp_optim = make_optimizer(agent.grasp.head.parameters(), lr=cfg.drq.critic_lr)
            grasp_updater = GraspCriticUpdater(agent.grasp.loss, grasp_optim, agent.grasp.target_updater,
                                               cfg.drq.utd_ratio)
            grasp_components = {"grasp_loss": agent.grasp.loss, "grasp_optim": grasp_optim}
            # HIL-SERL's grasp penalty, computed on every sample (demos and interventions included)
            toggle_penalty = GripperPenalty(cfg.grasp_penalty, index=-1, penalty_key="grasp_penalty", judge="command",
                                            apply_to_reward=False)
        run = RunCounters()
        resuming = cfg.resume and bool(checkpoint_directories(logger.run_dir / "checkpoints"))

        def start_actor_processes() -> BackgroundCollector:
            """The actor: env (simulation or arm), cameras, intervention device and policy in a process of
            its own (TorchRL AsyncCollector), its batches queued by a thread of this one; actor i: its own
            simulation and random shifts (seeded apart), init_random_frames of its own. Started, and in
            simulation held a batch per actor past the learner's first owed update."""
            actor_envs = [
                functools.partial(_make_actor_env, cfg.env, cfg.robot if cfg.robot.real else None,
                                  make_trunk_features(agent, cfg.drq, env_seed + i * ACTOR_SEED_STRIDE) if cached
                                  else None, cfg.intervention, env_seed + i * ACTOR_SEED_STRIDE + run.step)
                for i in range(cfg.actors)
            ]
            actor = BackgroundCollector.async_collector(
                actor_envs, agent.policy, frames_per_batch=cfg.frames_per_batch, total_frames=-1,
                init_random_frames=-(-max(cfg.random_steps - run.step, 0) // cfg.actors),
                # not in the partial: TorchRL cloudpickles the env function, which breaks a queue's pipes
                create_env_kwargs={"keys": keys},
            )
            stack.callback(actor.shutdown)
            if governed:  # nothing is owed before training_starts: the actor runs up to it freely
                actor.hold_ahead(max(cfg.training_starts - run.step, 0) + cfg.actors * cfg.frames_per_batch)
            return actor.start()

        actor = None
        if link is None and governed and not resuming:
            # a fresh simulated run: the actor takes its random steps on the other core (~1.3 min on a
            # 2-core CPU) while this one encodes the demos below (84 s); a resumed actor needs the
            # checkpoint's step and weights first, and a real arm moves only once the learner is ready
            actor = start_actor_processes()
        if cfg.demos:
            encode = None
            if cached:
                demo_features = make_trunk_features(agent, cfg.drq, cfg.seed + 2_000_000)
                encode = lambda demos: stored(demo_features.encode_transitions(demos))  # noqa: E731
            buffer = make_demo_replay_buffer(
                cfg.buffer_size, learner_batch, cfg.demos, scratch_dir=logger.run_dir / "replay",
                demo_fraction=cfg.demo_fraction, pixel_keys=pixel_keys, seed=env_seed, encode=encode,
                prefetch=cfg.prefetch,
            )
        else:
            buffer = make_pixel_replay_buffer(
                cfg.buffer_size, learner_batch, logger.run_dir / "replay", pixel_keys=pixel_keys, seed=env_seed
            )
        # intervened steps also go to the demo side (SERL/HIL-SERL)
        router = InterventionRouter(buffer) if cfg.intervention != "none" else None
        # the actor's env is rebuilt on resume: the checkpoint holds the learner's side
        checkpointer = RunCheckpointer(
            logger.run_dir / "checkpoints", keep_last=cfg.keep_checkpoints,
            loss=agent.loss, buffer=buffer, logger=logger, **optimizers, **grasp_components,
        )
        if resuming and run.resume(checkpointer, logger):
            print(f"resumed {run} buffer={online_size(buffer)} "
                  f"actor_checksum={parameters_checksum(agent.actor.parameters())!r}", flush=True)
        minutes_before = logger.last_value("time/minutes") or 0.0  # a resumed run's wall clock goes on from its checkpoint

        if cfg.role == "learner":
            # the actor on the robot PC sends frames; the learner encodes them (views of its own)
            actor = link
            online_features = make_trunk_features(agent, cfg.drq, env_seed) if cached else None

            def stored_online(batch):
                batch = batch.exclude(POLICY_VERSION_KEY, POLICY_VERSION_KEY[-1])  # the link's bookkeeping
                return stored(online_features.encode_transitions(batch) if cached else batch)

            def push_weights() -> None:
                link.publish_weights(agent.policy, run.updates)
        else:
            if actor is None:
                actor = start_actor_processes()
            if cfg.robot.real and cfg.learner_nice:
                niceness = raise_process_niceness(cfg.learner_nice)
                print(f"learner process at niceness {niceness}: the arm's control loop gets a core first", flush=True)
            stored_online = stored
            push_weights = actor.update_policy_weights_

        def actors_now() -> int:
            """The actors feeding this learner: its actor processes, or the remote actors heard from lately."""
            return cfg.actors if link is None else max(1, link.actors_seen_within(ACTOR_ALIVE_S))

        if link is not None and governed:
            link.hold_ahead(actors_now() * cfg.frames_per_batch)
        # a real arm is evaluated by the operator's episodes, not by a second robot
        evaluator = None
        if not cfg.robot.real and rank == 0 and cfg.eval_every > 0:
            # in a process of its own, on the weights of the step it evaluates: learning goes on meanwhile;
            # the policy acts on view 0, so the evaluation env encodes only that one
            eval_seed = cfg.seed + 1_000_000
            evaluator = BackgroundEvaluator(
                functools.partial(_make_actor_env, cfg.env, None,
                                  make_trunk_features(agent, cfg.drq, eval_seed, num_views=1) if cached else None,
                                  "none", eval_seed),
                agent.policy, cfg.eval_episodes,
            )
            stack.callback(evaluator.close)
        tracker = EpisodeTracker()
        train_metrics: dict[str, float] = {}
        pushed_updates = run.updates  # the learner's weights the actor has
        steps_per_round = max(1, math.ceil(cfg.frames_per_batch * cfg.updates_per_step))  # a batch's worth

        def learner_step() -> None:
            nonlocal train_metrics
            batch = buffer.sample(learner_batch)
            grasp_metrics = {}
            if grasp_updater is not None:  # the gripper command is the grasp critic's
                grasp_metrics = grasp_updater.update(toggle_penalty(batch))
                batch = batch.exclude("action").set("action", batch["action"][..., :-1])
            train_metrics = {**updater.update(batch), **grasp_metrics}
            run.updates += 1

        def periodic_work() -> None:
            minutes = minutes_before + (time.perf_counter() - start_time) / 60
            if run.due(cfg.log_every):
                ratio = run.updates_per_step(cfg.training_starts)  # achieved; the target is updates_per_step
                logger.log({**train_metrics, "train/updates": run.updates, "train/interventions": run.interventions,
                            "train/buffer_size": online_size(buffer), "time/minutes": minutes,
                            "train/updates_per_step": ratio, "train/actors_alive": actors_now()}, run.step)
                logger.progress(run.step, updates_per_step=ratio)
            if evaluator is not None:
                if run.due(cfg.eval_every):
                    video = logger.run_dir / "videos" / f"eval_{run.step}.gif" if cfg.video else None
                    evaluator.submit(run.step, agent.policy, video_path=video)
                    logger.log({"time/minutes": minutes}, run.step)  # when the evaluated weights were current
                log_evaluations(evaluator.poll())
            if run.due(cfg.checkpoint_every):
                run.save(checkpointer)

        def log_evaluations(results) -> None:
            for step, metrics in results:  # at the step whose weights they evaluated
                logger.log(metrics, step)
                logger.progress(run.step, eval_success=metrics["eval/success_rate"])

        def store(batch) -> None:
            """One actor batch into the buffer (interventions to the demo side), counted and logged."""
            if router is not None:
                run.interventions += router.extend(stored_online(batch))
            else:
                buffer.extend(stored_online(batch))
            run.advance(batch.numel())
            for episode in tracker.update(batch.reshape(-1)):
                run.episodes += 1
                logger.log({"train/episode_return": episode["return"], "train/success": episode["success"],
                            "train/episode_length": episode["length"]}, run.step)
                logger.progress(run.step, success=episode["success"], ret=episode["return"])

        with GracefulStop() as stop:
            try:
                if link is not None:
                    push_weights()  # what a connecting actor acts with (a resumed learner's, or the initial ones)
                while run.step < cfg.total_steps and not stop.requested:
                    owed = run.updates_owed(cfg.updates_per_step, cfg.training_starts)
                    try:  # wait for the actor only when the learner has nothing to do
                        batches = actor.drain(timeout_s=0.0 if owed else 1.0)
                    except RuntimeError:
                        if stop.requested:  # Ctrl-C reached the actor process too: it has stopped
                            break
                        raise
                    for batch in batches:
                        if run.step >= cfg.total_steps:
                            break
                        store(batch)
                        if governed:  # simulation: every learner step this batch is owed, now
                            for _ in range(run.updates_owed(cfg.updates_per_step, cfg.training_starts)):
                                learner_step()
                        periodic_work()
                    # a real arm or a remote actor: train while behind the ratio, a batch's worth of learner
                    # steps at most before taking the actor's batches again (may fall behind, never ahead)
                    for _ in range(min(run.updates_owed(cfg.updates_per_step, cfg.training_starts), steps_per_round)):
                        if stop.requested:
                            break
                        learner_step()
                    if run.updates >= pushed_updates + cfg.push_every:
                        push_weights()
                        pushed_updates = run.updates
                    if governed:  # a batch ahead of the learner's ratio per actor
                        actor.hold_ahead(actors_now() * cfg.frames_per_batch)
                if evaluator is not None and not stop.requested:  # the last evaluations (a stop drops them)
                    log_evaluations(evaluator.wait())
            finally:
                if link is not None:  # stop acknowledging, keep what was acknowledged: all of it is in the checkpoint
                    link.close()
                    for batch in link.pull(max_batches=10**9):
                        store(batch)
                run.save(checkpointer)
                logger.close()


PRESETS = ("auto", "serl", "cpu")
# What the CPU preset changes (docs/results.md: learns PandaPickCube from pixels in under an hour on 2 cores).
CPU_PRESET = {
    "drq.feature_views": 2, "drq.pretrained_path": "auto", "updates_per_step": 0.1, "total_steps": 30_000,
    "eval_every": 5_000, "eval_episodes": 20,  # and --bf16 where the CPU has native bf16 (parse_with_preset)
}
CPU_BF16_UPDATES_PER_STEP = 0.15  # native bf16 (AVX-512): 30k env steps in ~38 min (Piper ~41), not ~27


def parse_with_preset(argv=None) -> Config:
    """The recipe's config: the chosen preset's values, then the options given on the command line."""
    import torch

    given = vars(build_parser(Config, __doc__).parse_args(argv))
    preset = given.get("preset", "auto")
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {PRESETS}, got {preset!r}")
    if preset == "auto":
        preset = "serl" if torch.cuda.is_available() else "cpu"
    overrides = {}
    if preset == "serl" and torch.cuda.is_available() and "device" not in given:
        overrides = {"device": "cuda", "cudagraphs": True}
    elif preset == "cpu":
        overrides = dict(CPU_PRESET)
        if not given.get("robot.real", False):
            overrides["demos"] = "auto"
        overrides["bf16"] = precision.native_bf16("cpu")  # emulated bfloat16: ~10x slower than float32
        if overrides["bf16"]:  # the bf16 learner has time for 1.5x the learner steps in the hour
            overrides["updates_per_step"] = CPU_BF16_UPDATES_PER_STEP
    cfg = apply_overrides(apply_overrides(Config(), overrides), given)
    chosen = {k: v for k, v in overrides.items() if k not in given}
    print(f"preset {preset}: " + (", ".join(f"--{k} {v}" for k, v in chosen.items()) or "SERL's defaults")
          + " (any option on the command line overrides it; --preset serl for SERL's exact configuration)",
          flush=True)
    if chosen.get("bf16") is False:
        print("--bf16 False: this CPU has no native bfloat16 kernels (no AVX-512), so the learner stays in float32 "
              "(docs/results.md: the preset learns slower here)", flush=True)
    return cfg


def run_remote_actor(cfg: Config, agent, env_seed: int, keys) -> None:
    """``--role actor``: the env or the arm, its cameras, the intervention device and the policy in
    this process, sending its steps to the learner at ``--host``, with the frames compressed
    (``--image_codec``); it reconnects when the learner is away, and holds (no new action) once the
    learner has been silent for ``--max_learner_silence_s``."""
    cached = cfg.drq.feature_views > 0
    features = make_trunk_features(agent, cfg.drq, env_seed) if cached else None
    # the learner encodes the frames itself: the features the actor acts on do not travel
    dropped = [feature_key(k) for k in CAMERAS] if cached else []
    actor = RemoteActor(
        functools.partial(_make_actor_env, cfg.env, cfg.robot if cfg.robot.real else None, features,
                          cfg.intervention, env_seed, keys=keys),
        agent.policy, host=cfg.host, port=cfg.port, secret=load_secret(secret_file=cfg.secret_file or None),
        frames_per_batch=cfg.frames_per_batch, timeout_s=cfg.timeout_s, init_random_frames=cfg.random_steps,
        seed=env_seed, image_codec=None if cfg.image_codec == "none" else cfg.image_codec,
        postproc=(lambda b: b.exclude(*dropped, *[("next", k) for k in dropped])) if dropped else None,
        max_learner_silence_s=cfg.max_learner_silence_s or None,
        # simulation: step at the learner's pace (it acknowledges at most a batch ahead of its ratio)
        max_unacked=None if cfg.robot.real else ACTOR_UNACKED_BATCHES,
    )
    act_until_stopped(actor, cfg.total_steps)


def _make_actor_env(env_cfg: EnvConfig, robot_cfg: RobotConfig | None, trunk_features, intervention: str,
                    seed: int, keys: Any = None):
    """The actor's env, built in the actor's process: the simulation or the arm (``robot_cfg``), with
    its TrunkFeatures copy and the human-intervention device (``keys``: the learner process's
    keyboard queue)."""
    env = make_env(env_cfg, robot_cfg, seed=seed)
    if trunk_features is not None:
        env = TransformedEnv(env, trunk_features)
    if intervention != "none":
        env = TransformedEnv(env, Intervention(make_intervention_source(intervention, keys=keys)))
    return env


if __name__ == "__main__":
    main()
