"""The run's counters: periodic work keeps its period whatever the batch size; a checkpoint carries them."""

import pytest
import torch

from torchrl_serl.training.checkpoint import RunCheckpointer
from torchrl_serl.training.logging import RunLogger
from torchrl_serl.training.run_counters import RunCounters


@pytest.mark.parametrize("frames", [1, 3, 7, 10])
def test_due_once_per_period_whatever_the_batch(frames):
    run = RunCounters()
    due_at = []
    while run.step < 100:
        run.advance(frames)
        if run.due(10):
            due_at.append(run.step)
    # one hit per crossed multiple of 10, at the first batch that reaches it
    assert [s // 10 for s in due_at] == list(range(1, run.step // 10 + 1))
    assert all(s - frames < (s // 10) * 10 <= s for s in due_at)


def test_due_never_for_a_period_of_zero():
    run = RunCounters()
    run.advance(5)
    assert not run.due(0) and not run.due(-1) and run.due(5)
    with pytest.raises(ValueError, match="frames"):
        run.advance(-1)


def test_resume_restores_step_and_counters_and_truncates_the_logs(tmp_path):
    net = torch.nn.Linear(2, 2)
    logger = RunLogger(tmp_path, "run", progress=False)
    checkpointer = RunCheckpointer(tmp_path / "run" / "checkpoints", net=net, logger=logger)
    run = RunCounters()
    run.advance(12)
    run.updates, run.episodes, run.interventions = 5, 2, 1
    run.save(checkpointer)
    logger.log({"train/x": 1.0}, 12)
    logger.log({"train/x": 2.0}, 20)  # logged after the checkpoint by a run that then died
    logger.close()

    logger = RunLogger(tmp_path, "run", progress=False)
    resumed = RunCounters()
    info = resumed.resume(RunCheckpointer(tmp_path / "run" / "checkpoints", net=net, logger=logger), logger)
    assert info is not None and info.step == 12
    assert resumed == RunCounters(step=12, updates=5, episodes=2, interventions=1)
    assert str(resumed) == "step=12 updates=5 episodes=2 interventions=1"
    rows = (tmp_path / "run" / "scalars" / "train" / "x.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows] == [12]
    logger.close()


def test_resume_without_checkpoint_leaves_zeros_and_refuses_foreign_counters(tmp_path):
    net = torch.nn.Linear(2, 2)
    run = RunCounters()
    assert run.resume(RunCheckpointer(tmp_path / "a", net=net)) is None and run == RunCounters()
    RunCheckpointer(tmp_path / "b", net=net).save(3, policy_version=7)
    with pytest.raises(ValueError, match="policy_version"):
        RunCounters().resume(RunCheckpointer(tmp_path / "b", net=net))


def test_updates_owed_follows_the_ratio_from_training_starts_on():
    run = RunCounters()
    run.advance(3)
    assert run.updates_owed(1.0, training_starts=4) == 0
    run.advance(1)  # step 4: the first update is due
    assert run.updates_owed(1.0, training_starts=4) == 1
    run.advance(9)  # step 13: 10 due at 1 per step, 5 at 0.5 (a fractional ratio carries over)
    assert run.updates_owed(1.0, training_starts=4) == 10
    assert run.updates_owed(0.5, training_starts=4) == 5
    run.updates = 5
    assert run.updates_per_step(training_starts=4) == 0.5  # the ratio achieved
    run.updates = 12  # a learner ahead of the ratio owes nothing
    assert run.updates_owed(1.0, training_starts=4) == 0
