"""Synthetic sensor rendering: geometry of the projection, boxes, LiDAR ranges, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import LineString, Polygon, box

from irlvla_env.synthetic.render import CLASS_COLORS, RenderMap, SensorRenderer, box_corners, clip_polygon_near
from irlvla_env.synthetic.sensors import LidarSpec, camera_rotation, default_rig

ORIGIN = np.array([431_000.0, 5_400_000.0])  # UTM-sized coordinates, as real maps have
HEADING = 0.7  # [rad] a rotated ego pose checks the global -> ego transform


def to_global(local_xy: np.ndarray) -> np.ndarray:
    c, s = np.cos(HEADING), np.sin(HEADING)
    local_xy = np.asarray(local_xy, dtype=np.float64)
    return ORIGIN + local_xy @ np.array([[c, s], [-s, c]])


def local_polygon(xmin: float, ymin: float, xmax: float, ymax: float) -> Polygon:
    return Polygon(to_global(np.asarray(box(xmin, ymin, xmax, ymax).exterior.coords)))


@pytest.fixture(scope="module")
def renderer() -> SensorRenderer:
    """A straight road along the ego's x axis with a solid white line at y = -2 m (ego frame)."""
    line = LineString(to_global(np.array([[-100.0, -2.0], [100.0, -2.0]])))
    road_map = RenderMap(drivable=[local_polygon(-100, -6, 100, 6)], solid_white=[line])
    return SensorRenderer(road_map, seed=0)


EGO_POSE = np.array([*ORIGIN, HEADING])
CAR_AHEAD = np.array([[15.0, 0.0, 0.8, 4.5, 2.0, 1.6, 0.0]])


def test_rig_frames_follow_opencv_convention():
    rig = default_rig((256, 144))
    assert set(rig) == {"CAM_F0", "CAM_L0", "CAM_L1", "CAM_L2", "CAM_R0", "CAM_R1", "CAM_R2", "CAM_B0"}
    front = rig["CAM_F0"]
    # Optical axis (camera z) points forward and slightly down; camera x points to the ego's right.
    axis = front.sensor2lidar_rotation[:, 2]
    assert axis[0] > 0.99 and axis[2] < 0
    assert front.sensor2lidar_rotation[1, 0] == pytest.approx(-1.0, abs=1e-9)
    left = rig["CAM_L1"].sensor2lidar_rotation[:, 2]
    assert left[1] > 0.99
    hfov = 2 * np.degrees(np.arctan(front.width / 2 / front.intrinsics[0, 0]))
    assert 60 < hfov < 70
    rot = camera_rotation(0.3, 0.1)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)


def test_box_ahead_is_seen_by_front_camera_only(renderer):
    empty = renderer.render_cameras(EGO_POSE, np.zeros((0, 7)), [])
    with_car = renderer.render_cameras(EGO_POSE, CAR_AHEAD, ["vehicle"])
    assert with_car["CAM_F0"].shape == (144, 256, 3) and with_car["CAM_F0"].dtype == np.uint8
    np.testing.assert_array_equal(with_car["CAM_B0"], empty["CAM_B0"])
    front = renderer.rig["CAM_F0"]
    u, v = front.project(front.ego_to_camera(np.array([13.0, 0.0, 0.8])))  # centre of the rear face
    pixel = with_car["CAM_F0"][int(v), int(u)].astype(float)
    colour = np.array(CLASS_COLORS["vehicle"], dtype=float)
    cosine = pixel @ colour / (np.linalg.norm(pixel) * np.linalg.norm(colour))
    assert cosine > 0.99, (pixel, colour)
    assert not np.array_equal(pixel, empty["CAM_F0"][int(v), int(u)])


def test_lane_marking_projects_where_the_intrinsics_say(renderer):
    image = renderer.render_cameras(EGO_POSE, np.zeros((0, 7)), [], cameras=["CAM_F0"])["CAM_F0"]
    front = renderer.rig["CAM_F0"]
    k, rot, t = front.intrinsics, front.sensor2lidar_rotation, front.sensor2lidar_translation
    for x in (6.0, 10.0):
        on_line = rot.T @ (np.array([x, -2.0, 0.0]) - t)  # by hand: ego -> camera -> pixel
        u, v = k[0, 0] * on_line[0] / on_line[2] + k[0, 2], k[1, 1] * on_line[1] / on_line[2] + k[1, 2]
        assert image[int(v), int(u)].mean() > 180, (x, u, v)
        off = front.project(front.ego_to_camera(np.array([x, -0.5, 0.0])))
        assert image[int(off[1]), int(off[0])].mean() < 110


def test_box_behind_camera_does_not_smear(renderer):
    empty = renderer.render_cameras(EGO_POSE, np.zeros((0, 7)), [], cameras=["CAM_F0"])["CAM_F0"]
    behind = np.array([[-10.0, 0.0, 0.8, 4.5, 2.0, 1.6, 0.3]])
    image = renderer.render_cameras(EGO_POSE, behind, ["vehicle"], cameras=["CAM_F0"])["CAM_F0"]
    np.testing.assert_array_equal(image, empty)
    # Straddles the front camera's plane on the ego's left: must show only on the left of the image.
    straddling = np.array([[4.0, 3.0, 0.8, 10.0, 2.0, 1.6, 0.0]])
    image = renderer.render_cameras(EGO_POSE, straddling, ["vehicle"], cameras=["CAM_F0"])["CAM_F0"]
    changed = np.any(image != empty, axis=2)
    assert changed.any()
    assert not changed[:, image.shape[1] // 2 :].any()


def test_clip_polygon_near_keeps_front_part():
    quad = np.array([[-1.0, 0, -2], [1.0, 0, -2], [1.0, 0, 2], [-1.0, 0, 2]])
    clipped = clip_polygon_near(quad, near=0.5)
    assert clipped[:, 2].min() == pytest.approx(0.5)
    assert len(clip_polygon_near(quad[:2], near=0.5)) == 0


def test_lidar_hits_box_at_the_right_range(renderer):
    points = renderer.render_lidar(EGO_POSE, CAR_AHEAD, ["vehicle"])
    assert points.shape[0] == 6 and points.dtype == np.float32
    on_box = (np.abs(points[1]) < 0.8) & (points[2] > 0.2) & (points[2] < 1.5) & (points[0] > 5)
    assert on_box.sum() > 5
    np.testing.assert_allclose(points[0, on_box], 15.0 - 2.25, atol=0.1)  # the rear face, +- noise
    assert not np.any((points[0] > 13.0) & (points[0] < 17.0) & (np.abs(points[1]) < 0.9))  # nothing inside
    ground = points[2] < 0.15
    assert ground.sum() > 1000
    np.testing.assert_allclose(points[2, ground], 0.0, atol=0.1)
    assert np.abs(points[:2]).max() <= renderer.lidar.max_range + 1
    rings = np.unique(points[4])
    assert rings.min() >= 0 and rings.max() < renderer.lidar.num_beams


def test_lidar_intensity_is_higher_on_lane_markings(renderer):
    points = renderer.render_lidar(EGO_POSE, np.zeros((0, 7)), [])
    ground = points[2] < 0.15
    on_line = ground & (np.abs(points[1] + 2.0) < 0.05)
    asphalt = ground & (np.abs(points[1]) < 1.0)
    assert on_line.sum() > 3 and asphalt.sum() > 100
    assert points[3, on_line].mean() > points[3, asphalt].mean() + 30


def test_rendering_is_deterministic_with_a_seed(renderer):
    road_map = renderer.map
    a = SensorRenderer(road_map, seed=3).render_lidar(EGO_POSE, CAR_AHEAD, ["vehicle"])
    b = SensorRenderer(road_map, seed=3).render_lidar(EGO_POSE, CAR_AHEAD, ["vehicle"])
    c = SensorRenderer(road_map, seed=4).render_lidar(EGO_POSE, CAR_AHEAD, ["vehicle"])
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    rng_a = renderer.render_lidar(EGO_POSE, CAR_AHEAD, ["vehicle"], rng=np.random.default_rng(7))
    rng_b = renderer.render_lidar(EGO_POSE, CAR_AHEAD, ["vehicle"], rng=np.random.default_rng(7))
    np.testing.assert_array_equal(rng_a, rng_b)
    cams_a = SensorRenderer(road_map, seed=3).render_cameras(EGO_POSE, CAR_AHEAD, ["vehicle"])
    cams_b = SensorRenderer(road_map, seed=9).render_cameras(EGO_POSE, CAR_AHEAD, ["vehicle"])
    for name in cams_a:
        np.testing.assert_array_equal(cams_a[name], cams_b[name])


def test_small_lidar_spec_and_box_corners():
    spec = LidarSpec(num_beams=4, horizontal_resolution_deg=2.0)
    assert spec.ray_directions().shape == (4, 180, 3)
    corners = box_corners(np.array([[1.0, 2.0, 0.5, 4.0, 2.0, 1.0, np.pi / 2]]))
    np.testing.assert_allclose(corners[0].min(axis=0), [0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(corners[0].max(axis=0), [2.0, 4.0, 1.0], atol=1e-9)


def _tiny_map_layers() -> dict[str, pd.DataFrame]:
    """Two lanes of one roadblock along x (lane 0 on the left), with their three boundaries."""
    def frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=columns + ["geometry"]).set_index(pd.Index([r["fid"] for r in rows]))

    lanes = frame(
        [{"fid": "1", "lane_group_fid": "10", "lane_index": 0, "left_boundary_fid": "100", "right_boundary_fid": "101",
          "geometry": box(0, 0, 50, 3.5)},
         {"fid": "2", "lane_group_fid": "10", "lane_index": 1, "left_boundary_fid": "101", "right_boundary_fid": "102",
          "geometry": box(0, -3.5, 50, 0)}],
        ["fid", "lane_group_fid", "lane_index", "left_boundary_fid", "right_boundary_fid"],
    )  # fmt: skip
    empty = lambda cols: pd.DataFrame({c: pd.Series([], dtype=object) for c in cols + ["geometry"]})  # noqa: E731
    return {
        "lanes_polygons": lanes,
        "lane_connectors": empty(["exit_lane_fid", "entry_lane_fid", "lane_group_connector_fid"]),
        "gen_lane_connectors_scaled_width_polygons": empty(["lane_connector_fid"]),
        "lane_groups_polygons": frame([{"fid": "10", "geometry": box(0, -3.5, 50, 3.5)}], ["fid"]),
        "lane_group_connectors": empty(["from_lane_group_fid", "to_lane_group_fid"]),
        "baseline_paths": pd.DataFrame({
            "lane_fid": ["1", "2"], "lane_connector_fid": [None, None],
            "geometry": [LineString([(0, 1.75), (50, 1.75)]), LineString([(0, -1.75), (50, -1.75)])]}),
        "boundaries": frame([{"fid": f, "geometry": LineString([(0, y), (50, y)])}
                             for f, y in (("100", 3.5), ("101", 0.0), ("102", -3.5))], ["fid"]),
        "crosswalks": frame([{"fid": "7", "geometry": box(40, -3.5, 44, 3.5)}], ["fid"]),
    }  # fmt: skip


def test_render_map_from_map_api_classifies_markings():
    from irlvla_env.navsim.map_api import NuPlanMap

    render_map = RenderMap.from_map_api(NuPlanMap(_tiny_map_layers(), "us-nv-las-vegas-strip"))
    assert [line.coords[0][1] for line in render_map.dashed_white] == [0.0]
    assert [line.coords[0][1] for line in render_map.solid_yellow] == [3.5]
    assert [line.coords[0][1] for line in render_map.solid_white] == [-3.5]
    assert len(render_map.drivable) == 3 and len(render_map.crosswalks) == 1
    crosswalk_layer = next(layer for layer in render_map.layers if layer.material == "crosswalk")
    assert len(crosswalk_layer.rings) >= 5  # zebra bars
    raster = SensorRenderer(render_map, raster_half_extent=16.0).material_raster(np.array([10.0, 1.75, 0.0]))
    assert raster.shape == (256, 256)
    assert set(np.unique(raster)) >= {0, 1, 5, 6, 7}


def test_lidar_box_culling_matches_brute_force(renderer):
    """The azimuth/elevation windows must not drop a single box hit: compare with a per-ray slab test."""
    from irlvla_env.synthetic.lidar_cast import ray_box_distance

    spec = LidarSpec(num_beams=12, horizontal_resolution_deg=3.0, range_noise_std=0.0, dropout=0.0)
    fast = SensorRenderer(renderer.map, lidar=spec)
    rng = np.random.default_rng(5)
    boxes = np.column_stack([rng.uniform(-30, 30, 12), rng.uniform(-30, 30, 12), rng.uniform(0.3, 2.0, 12),
                             rng.uniform(0.5, 8, 12), rng.uniform(0.5, 3, 12), rng.uniform(0.5, 4, 12),
                             rng.uniform(-np.pi, np.pi, 12)])  # fmt: skip
    points = fast.render_lidar(EGO_POSE, boxes, ["vehicle"] * len(boxes))
    origin, rays = np.asarray(spec.mount), spec.ray_directions().reshape(-1, 3)
    ground = np.where(rays[:, 2] < 0, -origin[2] / np.minimum(rays[:, 2], -1e-12), np.inf)
    nearest = np.min(np.stack([ground] + [ray_box_distance(origin, rays, b) for b in boxes]), axis=0)
    keep = nearest <= spec.max_range
    expected = origin + nearest[keep, None] * rays[keep]
    np.testing.assert_allclose(points[:3].T, expected, atol=1e-4)


def test_render_map_falls_back_to_offset_centerlines_without_boundaries():
    from irlvla_env.navsim.map_api import NuPlanMap

    layers = _tiny_map_layers()
    layers["lanes_polygons"] = layers["lanes_polygons"].drop(columns=["left_boundary_fid", "right_boundary_fid"])
    del layers["boundaries"]
    render_map = RenderMap.from_map_api(NuPlanMap(layers, "us-nv-las-vegas-strip"))
    ys = {kind: [round(line.coords[0][1], 6) for line in getattr(render_map, kind)]
          for kind in ("dashed_white", "solid_yellow", "solid_white")}  # fmt: skip
    assert ys == {"dashed_white": [0.0], "solid_yellow": [3.5], "solid_white": [-3.5]}


def test_traffic_light_heads_show_their_state(renderer):
    head = np.array([*to_global(np.array([[20.0, 0.0]]))[0], HEADING])
    road_map = RenderMap(drivable=renderer.map.drivable, signal_heads={"42": head})
    lights = SensorRenderer(road_map)
    front = lights.rig["CAM_F0"]
    u, v = front.project(front.ego_to_camera(np.array([20.0, 0.0, 5.0])))
    empty = np.zeros((0, 7))
    red = lights.render_cameras(EGO_POSE, empty, [], ["CAM_F0"], traffic_lights=[(42, True)])["CAM_F0"]
    green = lights.render_cameras(EGO_POSE, empty, [], ["CAM_F0"], traffic_lights=[(42, False)])["CAM_F0"]
    none = lights.render_cameras(EGO_POSE, empty, [], ["CAM_F0"], traffic_lights=[(7, True)])["CAM_F0"]
    assert np.argmax(red[int(v), int(u)]) == 0 and np.argmax(green[int(v), int(u)]) == 1
    np.testing.assert_array_equal(none, lights.render_cameras(EGO_POSE, empty, [], ["CAM_F0"])["CAM_F0"])


def test_signal_heads_sit_over_the_connector_entry_nudged_towards_the_turn():
    from irlvla_env.synthetic.render_map import _signal_head

    straight = _signal_head(LineString([(0, 0), (20, 0)]))
    np.testing.assert_allclose(straight, [0.0, 0.0, 0.0], atol=1e-9)
    left_turn = _signal_head(LineString([(0, 0), (5, 0), (10, 5), (10, 15)]))
    assert left_turn[1] > 0.5 and left_turn[0] == pytest.approx(0.0) and left_turn[2] == pytest.approx(0.0)
    assert _signal_head(LineString([(0, 0), (0, 10), (-8, 12)]))[0] < 0  # heading +y, turning left = -x
