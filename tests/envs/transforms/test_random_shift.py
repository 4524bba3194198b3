import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from toy_arm_env import ToyArmEnv
from torchrl_serl.envs.transforms.random_shift import RandomShift, random_shift


def _coordinate_images(n: int, size: int = 32) -> torch.Tensor:
    """[n, 2, size, size] float: channel 0 = row index, channel 1 = column index, so shifts are readable."""
    r = torch.arange(size, dtype=torch.float32)
    img = torch.stack([r[:, None].expand(size, size), r[None, :].expand(size, size)])
    return img.expand(n, 2, size, size).clone()


def _recover_shift(out: torch.Tensor, pad: int) -> torch.Tensor:
    """Read back the (dy, dx) shift from the centre pixel of a shifted coordinate image: [..., 2]."""
    size = out.shape[-1]
    c = size // 2
    return torch.stack([out[..., 0, c, c], out[..., 1, c, c]], -1) - c


def test_every_shift_in_range_covers_all_offsets_and_replicates_edges():
    pad = 4
    out = random_shift(_coordinate_images(4000), pad, torch.Generator().manual_seed(1))
    shifts = _recover_shift(out, pad)
    assert shifts.abs().max() <= pad
    # all (2 pad + 1)^2 offsets appear, roughly uniformly (81 bins, ~49 per bin)
    counts = torch.bincount(((shifts[:, 0] + pad) * (2 * pad + 1) + shifts[:, 1] + pad).long(), minlength=81)
    assert (counts > 20).all() and counts.sum() == 4000
    # the image is a pure translation with clamped (edge-replicated) borders
    dy, dx = shifts[0].long()
    expected_rows = (torch.arange(32) + dy).clamp(0, 31).float()
    assert torch.equal(out[0, 0, :, 0], expected_rows)
    expected_cols = (torch.arange(32) + dx).clamp(0, 31).float()
    assert torch.equal(out[0, 1, 0, :], expected_cols)


def test_shifts_independent_across_samples_and_cameras():
    td = TensorDict(front=_coordinate_images(2000), wrist=_coordinate_images(2000), batch_size=[2000])
    out = RandomShift(["front", "wrist"], pad=4, generator=torch.Generator().manual_seed(0))(td)
    front, wrist = _recover_shift(out["front"], 4), _recover_shift(out["wrist"], 4)
    # correlation between cameras and between consecutive samples is ~0 (|r| < 0.1 at n=2000)
    for a, b in [(front[:, 0], wrist[:, 0]), (front[:, 1], wrist[:, 1]), (front[:-1, 0], front[1:, 0]), (front[:, 0], front[:, 1])]:
        assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.1


def test_seeded_generator_is_deterministic_and_uint8_preserved():
    imgs = torch.randint(0, 256, (8, 2, 3, 16, 16), dtype=torch.uint8)
    a = random_shift(imgs, 4, torch.Generator().manual_seed(3))
    b = random_shift(imgs, 4, torch.Generator().manual_seed(3))
    c = random_shift(imgs, 4, torch.Generator().manual_seed(4))
    assert a.dtype == torch.uint8 and a.shape == imgs.shape
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_on_env_check_env_specs_and_images_shifted():
    env = TransformedEnv(ToyArmEnv(), RandomShift(["front", "wrist"], generator=torch.Generator().manual_seed(0)))
    check_env_specs(env)
    assert env.observation_spec["front"].dtype == torch.uint8
    raw = ToyArmEnv().rollout(3)
    aug = env.rollout(3)  # same env seed -> same raw images before the shift
    assert aug["front"].shape == raw["front"].shape and aug["front"].dtype == torch.uint8
    assert not torch.equal(aug["front"], raw["front"])


def test_on_replay_buffer_sample_shifts_next_images_too():
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100), batch_size=64)
    imgs = _coordinate_images(100)
    rb.extend(TensorDict(front=imgs, next=TensorDict(front=imgs.clone(), batch_size=[100]), batch_size=[100]))
    rb.append_transform(RandomShift("front", generator=torch.Generator().manual_seed(0)))
    s = rb.sample()
    now, nxt = _recover_shift(s["front"], 4), _recover_shift(s["next", "front"], 4)
    assert now.abs().max() <= 4 and nxt.abs().max() <= 4
    assert (now != nxt).any(dim=-1).float().mean() > 0.8  # independent offsets for obs and next obs


@pytest.mark.parametrize(
    "images, error, match",
    [
        (torch.zeros(4, 16, 16, 3, dtype=torch.uint8), ValueError, "channels-last"),
        (torch.zeros(4, 3, 16, 16, dtype=torch.int64), TypeError, "uint8 or floating"),
        (torch.zeros(16, 16), ValueError, "at least 3 dims"),
    ],
)
def test_bad_images_raise_clear_errors(images, error, match):
    with pytest.raises(error, match=match):
        RandomShift("front")(TensorDict(front=images))


def test_missing_key_and_bad_pad():
    with pytest.raises(KeyError, match="wrist"):
        RandomShift(["wrist"])(TensorDict(front=torch.zeros(3, 8, 8)))
    with pytest.raises(ValueError, match="pad"):
        RandomShift("front", pad=-1)


def test_on_pixel_sim_env():
    from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv

    base = PandaPickCubeEnv(pixels=True, image_size=32, seed=0)
    env = TransformedEnv(base, RandomShift(["front", "wrist"], generator=torch.Generator().manual_seed(0)))
    check_env_specs(env)
    td = env.reset()
    assert td["front"].shape == (3, 32, 32) and td["front"].dtype == torch.uint8
    raw = torch.from_numpy(base.render_frame("front").copy()).permute(2, 0, 1)  # the env's own frame
    # the observation is that frame shifted: exactly one of the 81 offsets (or a few, on flat areas) reproduces it
    padded = torch.nn.functional.pad(raw[None].float(), (4, 4, 4, 4), mode="replicate")[0].to(torch.uint8)
    matches = [(dy, dx) for dy in range(9) for dx in range(9) if torch.equal(padded[:, dy : dy + 32, dx : dx + 32], td["front"])]
    assert matches
    env.close()
