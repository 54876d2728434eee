"""Mirror augmentation of RWM training: each input mirrors the way the world does (LiDAR BEV columns, the rig's strip
columns, signs of the lateral ego state, left/right commands), only the chosen scenes change, and training runs with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irlvla_env.observations import ObservationConfig
from irlvla_env.observations.lidar_bev import lidar_bev
from reward_models.augment import mirror_grids, mirror_observations, mirror_trajectories
from reward_models.model import RewardWorldModel, RWMConfig
from reward_models.train import RWMTrainConfig, train_rwm

from tests.test_rwm import TINY, tiny_scenes


def test_the_bev_of_a_mirrored_cloud_is_the_mirrored_bev():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-30, 30, (2, 500)), rng.uniform(0, 3, (1, 500))])  # rows x, y, z
    config = ObservationConfig()
    mirrored_cloud = lidar_bev(points * np.array([[1.0], [-1.0], [1.0]]), config)
    flipped = mirror_grids(torch.as_tensor(lidar_bev(points, config))[None], torch.tensor([True]))[0]
    np.testing.assert_array_equal(mirrored_cloud, flipped.numpy())
    assert mirrored_cloud.sum() > 0


def test_the_synthetic_rig_sees_a_mirrored_point_in_the_mirrored_column(synthetic_root):
    from irlvla_env.navsim.loader import load_split
    from irlvla_env.observations import required_sensors
    from reward_models.projection import StripProjector, strip_calibration

    config = ObservationConfig()
    scenes = load_split("navtest", synthetic_root, required_sensors(config), synthetic_root / "maps")
    agent_input = scenes.get_scene_from_token(scenes.tokens[0]).get_agent_input()
    projector = StripProjector(strip_calibration(agent_input, config), (config.image_height, config.image_width))
    points = torch.tensor([[10.0, 3.0], [5.0, 8.0], [20.0, 0.5], [8.0, 6.0]])
    grid, visible = projector(points)
    grid_m, visible_m = projector(points * torch.tensor([1.0, -1.0]))
    assert visible.all() and visible_m.all()
    torch.testing.assert_close(grid_m[:, 0], -grid[:, 0], atol=1e-4, rtol=0)  # columns mirror about the centre
    torch.testing.assert_close(grid_m[:, 1], grid[:, 1], atol=1e-4, rtol=0)  # rows stay


def test_only_the_chosen_scenes_mirror_and_mirroring_twice_is_the_identity():
    torch.manual_seed(0)
    obs = {"camera": torch.randint(0, 255, (3, 4, 6, 3), dtype=torch.uint8), "lidar_bev": torch.rand(3, 2, 8, 8),
           "ego_status": torch.randn(3, 4, 7), "command": torch.eye(4)[[0, 2, 1]]}
    trajectories = torch.randn(3, 5, 8, 3)
    rows = torch.tensor([True, False, True])
    mirrored = mirror_observations(obs, rows)
    assert torch.equal(mirrored["command"][0], torch.tensor([0.0, 0.0, 1.0, 0.0]))  # left -> right
    assert torch.equal(mirrored["command"][2], torch.tensor([0.0, 1.0, 0.0, 0.0]))  # straight stays
    torch.testing.assert_close(mirrored["ego_status"][0, :, [1, 2, 4, 6]], -obs["ego_status"][0, :, [1, 2, 4, 6]])
    torch.testing.assert_close(mirrored["ego_status"][0, :, [0, 3, 5]], obs["ego_status"][0, :, [0, 3, 5]])
    assert torch.equal(mirrored["camera"][0], obs["camera"][0].flip(1))
    for key in obs:
        assert torch.equal(mirrored[key][1], obs[key][1])  # not chosen
        assert torch.equal(mirror_observations(mirrored, rows)[key], obs[key])
    poses = mirror_trajectories(trajectories, rows)
    torch.testing.assert_close(poses[0, ..., 1:], -trajectories[0, ..., 1:])
    assert torch.equal(poses[1], trajectories[1]) and torch.equal(mirror_trajectories(poses, rows), trajectories)


def test_training_with_mirrored_scenes_runs_and_the_probability_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("NAVSIM_EXP_ROOT", str(tmp_path / "exp"))
    data = tiny_scenes(6)
    config = RWMTrainConfig(model=RWMConfig(**TINY), epochs=2, batch_scenes=3, candidates_per_step=8,
                            val_fraction=0.0, num_threads=1, mirror_probability=1.0, labels_dir=str(tmp_path))
    model = RewardWorldModel.from_pretrained(train_rwm(config, data=data, progress=False))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(ValueError, match="mirror_probability"):
        RWMTrainConfig(mirror_probability=1.5)
