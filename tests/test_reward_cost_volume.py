"""The RWM's BEV maps (the cost-volume head's, and the attention head's map decoder): map reads land where the
geometry says, each pose reads its own time slice, the training-only map targets are rasterised in the ego frame and
cached, and training actually supervises the maps with them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import shapely
import torch

from irlvla_env.navsim.map_api import SemanticMapLayer
from irlvla_env.scoring.drivable_map import PDMDrivableMap
from reward_models import scene_targets
from reward_models.cost_volume import FOOTPRINT, footprint_points, read_maps
from reward_models.irl import RWMLossConfig
from reward_models.model import RewardWorldModel, RWMConfig
from reward_models.scene_targets import ensure_scene_targets, rasterise, targets_path
from reward_models.train import RWMTrainConfig, train_rwm

from tests.test_rwm import TINY, tiny_scenes


def test_maps_are_read_at_the_footprint_and_in_the_poses_own_time_slice():
    grid, range_m = 8, 8.0  # 2 m cells
    static = torch.zeros(1, 1, grid, grid)
    static[0, 0, 1, 6] = 1.0  # row 1 -> x = 5 m ahead, column 6 -> y = -5 m (right)
    dynamic = torch.zeros(1, 8, 1, grid // 2, grid // 2)  # 4 m cells
    dynamic[0, 3, 0, 0, 0] = 1.0  # time slice 3, the cell centred at x = 6 m, y = 6 m
    points = torch.zeros(1, 1, 8, 2, 2)
    points[0, 0, :, 0] = torch.tensor([5.0, -5.0])
    points[0, 0, :, 1] = torch.tensor([6.0, 6.0])
    values = read_maps(static, dynamic, points, range_m)  # (1, 1, 8, 2, 2)
    assert values.shape == (1, 1, 8, 2, 2)
    torch.testing.assert_close(values[0, 0, :, 0, 0], torch.ones(8))  # the static cell, at every pose
    expected = torch.zeros(8)
    expected[3] = 1.0
    torch.testing.assert_close(values[0, 0, :, 1, 1], expected)  # the dynamic cell only at pose 3
    assert float(values[0, 0, :, 0, 1].abs().sum()) == 0.0 and float(values[0, 0, :, 1, 0].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="time slices"):
        read_maps(static, dynamic[:, :4], points, range_m)


def test_footprint_turns_with_the_heading():
    pose = torch.tensor([[10.0, 2.0, np.pi / 2]])
    points = footprint_points(pose)[0]
    assert points.shape == (len(FOOTPRINT), 2)
    torch.testing.assert_close(points[0], torch.tensor([10.0, 2.0 + FOOTPRINT[0][0]]), atol=1e-5, rtol=0)


def _fake_cache(pose=(100.0, 50.0, np.pi / 2), steps=41):
    """A road 8 m wide along the ego's heading and one 4 m x 2 m vehicle 10 m ahead of the ego, in global
    coordinates of an ego at `pose` (so the ego-frame transform is exercised)."""
    x, y, heading = pose
    forward, left = np.array([np.cos(heading), np.sin(heading)]), np.array([-np.sin(heading), np.cos(heading)])
    to_global = lambda a, b: np.array([x, y]) + a * forward + b * left
    road = shapely.Polygon([to_global(a, b) for a, b in ((-40, -4), (40, -4), (40, 4), (-40, 4))])
    drivable = PDMDrivableMap(np.array(["rb:1"]), np.array([int(SemanticMapLayer.ROADBLOCK)]), np.array([road]))
    observation = SimpleNamespace(
        present=np.ones((steps, 1), bool),
        centers=np.repeat(to_global(10.0, 0.0)[None, None], steps, axis=0),
        headings=np.full((steps, 1), heading),
        sizes=np.array([[4.0, 2.0]]),
        red_light_active=np.zeros((steps, 0), bool),
        red_light_polygons=np.zeros(0, object),
    )
    return SimpleNamespace(ego_state=np.array([x, y, heading, *([0.0] * 8)]), drivable_map=drivable, observation=observation)


def test_rasterised_targets_are_in_the_ego_frame():
    static, dynamic = rasterise(_fake_cache(), grid=16, range_m=16.0, num_poses=8)  # 2 m fine, 4 m mid cells
    assert static.shape == (2, 16, 16) and dynamic.shape == (8, 8, 8)
    centres = scene_targets.cell_centres(16, 16.0)
    np.testing.assert_array_equal(static[0], (np.abs(centres[..., 1]) < 4).astype(np.uint8))
    assert static[1].sum() == 0  # no red light
    mid = scene_targets.cell_centres(8, 16.0)
    near_box = (np.abs(mid[..., 0] - 10) <= 2 + 2) & (np.abs(mid[..., 1]) <= 1 + 2)
    np.testing.assert_array_equal(dynamic[0], near_box.astype(np.uint8))
    assert near_box.sum() > 0 and (dynamic == dynamic[:1]).all()  # the box does not move
    _, fine = rasterise(_fake_cache(), grid=16, range_m=16.0, num_poses=8, dynamic_grid=16)  # the map head's 2 m cells
    near_fine = (np.abs(centres[..., 0] - 10) <= 2 + 1) & (np.abs(centres[..., 1]) <= 1 + 1)
    assert fine.shape == (8, 16, 16)
    np.testing.assert_array_equal(fine[0], near_fine.astype(np.uint8))


def test_scene_targets_are_cached_and_completed_on_demand(tmp_path, monkeypatch):
    calls: list[str] = []

    class Store:
        def __init__(self, root):
            pass

        def __contains__(self, token):
            return token != "missing"

        def get(self, token):
            calls.append(token)
            return _fake_cache()

    monkeypatch.setattr("irlvla_env.scoring.metric_cache.MetricCacheStore", Store)
    first = ensure_scene_targets(tmp_path, ["a", "b"], tmp_path, grid=8, range_m=8.0, progress=False)
    assert calls == ["a", "b"] and targets_path(tmp_path, 8, 8.0).is_file()
    again = ensure_scene_targets(tmp_path, ["c", "b"], tmp_path, grid=8, range_m=8.0, progress=False)
    assert calls == ["a", "b", "c"]  # b came from the file
    assert again.tokens.tolist() == ["c", "b"]
    np.testing.assert_array_equal(again.static[1], first.static[1])
    with pytest.raises(FileNotFoundError, match="missing"):
        ensure_scene_targets(tmp_path, ["missing"], tmp_path, grid=8, range_m=8.0, progress=False)
    with pytest.raises(KeyError, match="zzz"):
        again.rows(["zzz"])


@pytest.mark.parametrize("heads", [{"candidate_head": "cost_volume"}, {"map_head": True}])
def test_training_supervises_the_maps_with_the_scene_targets(heads, tmp_path, monkeypatch):
    monkeypatch.setenv("NAVSIM_EXP_ROOT", str(tmp_path / "exp"))
    data = tiny_scenes(8)
    model_config = RWMConfig(**TINY, **heads)
    grid = model_config.lidar_bins // 2
    dynamic_grid = grid if model_config.map_head else grid // 2  # the attention head's maps are all on the fine grid
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    # every cell drivable, nothing ever occupied: what the first map channels must learn
    scene_targets.save_npz_atomic(targets_path(labels_dir, grid, model_config.bev_range_m, dynamic_grid), {
        "tokens": data.tokens.astype(str),
        "static": np.stack([np.ones((grid, grid)), np.zeros((grid, grid))])[None].repeat(len(data), 0).astype(np.uint8),
        "dynamic": np.zeros((len(data), 8, dynamic_grid, dynamic_grid), np.uint8),
    })
    config = RWMTrainConfig(model=model_config, epochs=15, batch_scenes=4, candidates_per_step=8, lr=1e-2,
                            val_fraction=0.0, num_threads=1, labels_dir=str(labels_dir),
                            loss=RWMLossConfig(map_weight=5.0))
    model = RewardWorldModel.from_pretrained(train_rwm(config, data=data, progress=False))
    with torch.no_grad():
        ctx = model.encode_scene({k: torch.as_tensor(v) for k, v in data.observations.items()})
    assert float(ctx.static_maps[:, 0].sigmoid().mean()) > 0.9
    assert float(ctx.static_maps[:, 1].sigmoid().mean()) < 0.1
    assert float(ctx.dynamic_maps[:, :, 0].sigmoid().mean()) < 0.1


@pytest.mark.parametrize("heads", [{"candidate_head": "cost_volume"}, {"candidate_head": "attention"},
                                   {"candidate_head": "attention", "map_head": True}])
def test_both_candidate_heads_score_and_round_trip(heads, tmp_path):
    from reward_models.model import RWMRewardModel

    from tests.test_rwm import flat_batch, forward_camera

    torch.manual_seed(0)
    model = RewardWorldModel(RWMConfig(**{**TINY, **heads, "camera_calibration": [forward_camera()]}))
    data = tiny_scenes(2)
    batch = flat_batch(data)
    before = RWMRewardModel(model).predict(*batch)
    after = RWMRewardModel.from_pretrained(model.save_pretrained(tmp_path / "model")).predict(*batch)
    assert np.isfinite(before.epdms).all() and before.epdms.std() > 0
    np.testing.assert_allclose(before.epdms, after.epdms, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="candidate_head"):
        RWMConfig(candidate_head="mlp")
    with pytest.raises(ValueError, match="map_head"):
        RWMConfig(candidate_head="cost_volume", map_head=True)
