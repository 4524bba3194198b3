"""Evaluation episodes in a process of their own: the learner and the actor go on while they run.

SERL evaluates in its actor loop, so its learner never waits for an evaluation. A synchronous
:func:`~torchrl_serl.training.evaluation.evaluate` in the learner process stops learning (and, in
simulation, the actor held to the learner's ratio) for as long as the episodes take: on a 2-core
CPU, 20 pixel episodes are ~1.6 min, every 5k env steps. :class:`BackgroundEvaluator` runs them
in a spawned process on a snapshot of the policy's weights taken at the step being evaluated, so
the result is the one the synchronous call would give at that step (same env, same seed, same
episodes in the same order); it arrives later, and is logged at the step it belongs to.

The process runs on idle CPU time only (Linux ``SCHED_IDLE``): the learner and the actor get the
cores whenever they want them, the episodes take the time they leave (on a 2-core CPU the learner
sets a simulated run's pace; at niceness 10, as before, an evaluation slowed the next 1000-3000 env
steps of one pixel run by 5-15%, and of another by ~1%: docs/results.md). It ignores Ctrl-C (the
owner decides: :meth:`close` stops it), and exits by itself when its owner process is gone.
"""
from __future__ import annotations

import copy
import os
import pickle
import queue
import signal
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.multiprocessing as mp
from tensordict import TensorDict
from torch import nn
from torchrl.envs import EnvBase

from torchrl_serl.training.evaluation import evaluate
from torchrl_serl.training.process_priority import run_process_on_idle_time

Result = tuple[int, dict[str, float]]


def _next_request(requests, owner: int):
    """The next request; ``None`` once the owner said so, or has died (a killed learner leaves no
    evaluation process behind)."""
    while True:
        try:
            return requests.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != owner:
                return None


def _evaluate_requests(payload: bytes, num_episodes, idle_time_only, requests, results, owner: int) -> None:
    """The evaluation process: ``(step, weights, video_path)`` requests in, ``(step, metrics)`` out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if idle_time_only:  # first: the threads started below (torch's, the renderer's) inherit it
        run_process_on_idle_time()
    torch.set_num_threads(1)
    env = None
    try:
        make_env, policy = pickle.loads(payload)
        env = make_env()
        while (request := _next_request(requests, owner)) is not None:
            step, weights, video_path = request
            pickle.loads(weights).to_module(policy)
            results.put((step, evaluate(env, policy, num_episodes, video_path=video_path)))
    except BaseException as err:  # noqa: BLE001 - reported to the owner, who raises it
        results.put((None, f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
    finally:
        if env is not None:
            env.close()


class BackgroundEvaluator:
    """Runs :func:`~torchrl_serl.training.evaluation.evaluate` on weight snapshots in a spawned process.

    Args:
        make_env: builds the evaluation env in the evaluation process (picklable: a module-level
            function or a ``functools.partial`` of one); built once, so consecutive evaluations
            continue its seeded episode sequence, as a synchronous evaluator's env would.
        policy: the acting policy; a CPU copy goes to the process once, :meth:`submit` sends its
            weights (the episodes run on the CPU, beside a learner on any device).
        num_episodes: episodes per evaluation.
        idle_time_only: run the process on idle CPU time only
            (:func:`~torchrl_serl.training.process_priority.run_process_on_idle_time`); ``False``: at
            its owner's priority.

    Example:
        >>> evaluator = BackgroundEvaluator(functools.partial(make_eval_env, seed=1), policy, 20)
        >>> evaluator.submit(5000, policy)          # snapshot of the weights at env step 5000
        >>> for step, metrics in evaluator.poll():  # later, without waiting
        ...     logger.log(metrics, step)
        >>> results = evaluator.wait()              # the end of a run: every submitted evaluation
        >>> evaluator.close()
    """

    def __init__(self, make_env: Callable[[], EnvBase], policy: nn.Module, num_episodes: int, idle_time_only: bool = True):
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
        ctx = mp.get_context("spawn")
        self._requests = ctx.Queue()
        self._results = ctx.Queue()
        self._pending: list[int] = []
        self._process = ctx.Process(
            target=_evaluate_requests, name="BackgroundEvaluator", daemon=True,
            # pickled here, tensors inline: torch's shared-memory pickling of a module fails on
            # empty tensors ("unable to resize file"), and nothing needs to be shared
            args=(pickle.dumps((make_env, copy.deepcopy(policy).cpu())), num_episodes, idle_time_only, self._requests,
                  self._results, os.getpid()),
        )
        self._process.start()

    @property
    def pending(self) -> list[int]:
        """Steps submitted and not yet returned by :meth:`poll` or :meth:`wait`."""
        return list(self._pending)

    def submit(self, step: int, policy: nn.Module, video_path: str | Path | None = None) -> None:
        """Evaluate ``policy``'s weights as they are now, labelled ``step``; returns at once."""
        self._check_alive()
        weights = pickle.dumps(TensorDict.from_module(policy).data.cpu())  # a snapshot: training goes on
        self._requests.put((step, weights, str(video_path) if video_path is not None else None))
        self._pending.append(step)

    def poll(self) -> list[Result]:
        """The evaluations finished since the last call, ``[(step, metrics)]``; never waits."""
        done = []
        while self._pending:
            try:
                done.append(self._take(self._results.get_nowait()))
            except queue.Empty:
                self._check_alive()
                break
        return done

    def wait(self, timeout_s: float | None = None) -> list[Result]:
        """Every pending evaluation, waiting for them (``TimeoutError`` after ``timeout_s``)."""
        done = []
        while self._pending:
            try:
                done.append(self._take(self._results.get(timeout=1.0)))
            except queue.Empty:
                self._check_alive()
                if timeout_s is not None:
                    timeout_s -= 1.0
                    if timeout_s <= 0:
                        raise TimeoutError(f"evaluations of steps {self._pending} did not finish in time") from None
        return done

    def close(self, timeout_s: float = 10.0) -> None:
        """Stops the process (pending evaluations are dropped: :meth:`wait` first to keep them)."""
        if self._process.is_alive():
            self._requests.put(None)
            self._process.join(timeout_s if not self._pending else 0.5)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout_s)
        self._pending.clear()
        for q in (self._requests, self._results):
            q.close()
            q.cancel_join_thread()

    def _take(self, result) -> Result:
        step, metrics = result
        if step is None:
            self._pending.clear()
            raise RuntimeError(f"the evaluation process failed: {metrics}")
        self._pending.remove(step)
        return step, metrics

    def _check_alive(self) -> None:
        if not self._process.is_alive():
            try:  # its last words, if it had time to say them
                self._take(self._results.get_nowait())
            except queue.Empty:
                pass
            raise RuntimeError(f"the evaluation process exited (exit code {self._process.exitcode})")


__all__ = ["BackgroundEvaluator"]
