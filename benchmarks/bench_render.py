"""Speed of the synthetic sensor renderer, side by side with a naive per-pixel / per-ray reference.

Run: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_render.py`

The references compute the same thing one pixel (one ray) at a time in Python: ground hit, material lookup,
slab test against every box. They run on a reduced case (`--naive-size`, a sparse LiDAR) so the script ends
quickly; the fast renderer is timed on the same reduced case and on the full default rig.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from shapely.geometry import LineString, box

from irlvla_env.synthetic.render import (
    CLASS_COLORS, MATERIAL_COLORS, MATERIAL_INTENSITY, RenderMap, SensorRenderer,
)  # fmt: skip
from irlvla_env.synthetic.lidar_cast import ray_box_distance
from irlvla_env.synthetic.sensors import LidarSpec, default_rig


def grid_city(blocks: int = 6, spacing: float = 80.0) -> RenderMap:
    """Roads every `spacing` metres in x and y, with sidewalks, lane lines and crosswalks at the crossings."""
    extent = blocks * spacing
    drivable, walkways, crosswalks, dashed, yellow, white = [], [], [], [], [], []
    for k in range(blocks + 1):
        c = k * spacing
        drivable += [box(0, c - 7, extent, c + 7), box(c - 7, 0, c + 7, extent)]
        walkways += [box(0, c + 7, extent, c + 10), box(0, c - 10, extent, c - 7)]
        walkways += [box(c + 7, 0, c + 10, extent), box(c - 10, 0, c - 7, extent)]
        yellow += [LineString([(0, c), (extent, c)]), LineString([(c, 0), (c, extent)])]
        for off in (-3.5, 3.5):
            dashed += [LineString([(0, c + off), (extent, c + off)]), LineString([(c + off, 0), (c + off, extent)])]
        for off in (-6.9, 6.9):
            white += [LineString([(0, c + off), (extent, c + off)]), LineString([(c + off, 0), (c + off, extent)])]
        crosswalks += [box(c + 8, j * spacing - 7, c + 11, j * spacing + 7) for j in range(blocks + 1)]
    return RenderMap(drivable=drivable, walkways=walkways, crosswalks=crosswalks,
                     dashed_white=dashed, solid_yellow=yellow, solid_white=white)  # fmt: skip


def traffic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    boxes = np.column_stack([
        rng.uniform(-40, 40, n), rng.uniform(-40, 40, n), np.full(n, 0.8),
        np.full(n, 4.5), np.full(n, 2.0), np.full(n, 1.6), rng.uniform(-np.pi, np.pi, n),
    ])  # fmt: skip
    keep = np.hypot(boxes[:, 0], boxes[:, 1]) > 6  # not on top of the ego
    return boxes[keep], ["vehicle"] * int(keep.sum())


def naive_camera(renderer: SensorRenderer, name: str, pose: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per-pixel loop: ray, nearest box hit, else ground material (no shading, no haze)."""
    spec = renderer.rig[name]
    raster = renderer.material_raster(pose)
    origin = spec.sensor2lidar_translation
    image = np.zeros((spec.height, spec.width, 3), dtype=np.uint8)
    rays = spec.pixel_rays()
    for v in range(spec.height):
        for u in range(spec.width):
            ray = rays[v, u] / np.linalg.norm(rays[v, u])
            nearest = min((float(ray_box_distance(origin, ray, b)) for b in boxes), default=np.inf)
            ground = -origin[2] / ray[2] if ray[2] < 0 else np.inf
            if nearest < ground:
                image[v, u] = CLASS_COLORS["vehicle"]
            elif np.isfinite(ground):
                hit = origin[:2] + ground * ray[:2]
                row, col = renderer._raster_index(hit)
                if 0 <= row < raster.shape[0] and 0 <= col < raster.shape[1]:
                    image[v, u] = MATERIAL_COLORS[raster[row, col]]
    return image


def naive_lidar(renderer: SensorRenderer, pose: np.ndarray, boxes: np.ndarray) -> int:
    """Per-ray loop with a slab test against every box; returns the number of points."""
    spec = renderer.lidar
    raster = renderer.material_raster(pose)
    origin = np.asarray(spec.mount)
    count = 0
    for ray in spec.ray_directions().reshape(-1, 3):
        best = -origin[2] / ray[2] if ray[2] < 0 else np.inf
        for b in boxes:
            best = min(best, float(ray_box_distance(origin, ray, b)))
        if best <= spec.max_range:
            hit = origin[:2] + best * ray[:2]
            row, col = renderer._raster_index(hit)
            _ = MATERIAL_INTENSITY[raster[min(max(row, 0), raster.shape[0] - 1), min(max(col, 0), raster.shape[1] - 1)]]
            count += 1
    return count


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (and raster cache for the same pose)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--boxes", type=int, default=20)
    parser.add_argument("--naive-size", type=int, nargs=2, default=(64, 36), metavar=("W", "H"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    city = grid_city()
    boxes, names = traffic(args.boxes, rng)
    poses = [np.array([80.0 * 2 + 1.75 + 0.5 * k, 80.0 * 2 + 20.0 + 1.3 * k, np.pi / 2 + 0.01 * k]) for k in range(8)]

    full = SensorRenderer(city)
    cams = len(full.rig)
    state = {"k": 0}

    def moving_cameras() -> None:  # a new pose per call: includes the per-pose map rasterisation
        state["k"] = (state["k"] + 1) % len(poses)
        full.render_cameras(poses[state["k"]], boxes, names)

    per_camera_moving = timed(moving_cameras, args.repeats) / cams
    per_camera_static = timed(lambda: full.render_cameras(poses[0], boxes, names), args.repeats) / cams
    raster_ms = timed(lambda: full._rasterise(poses[1]), args.repeats)
    lidar_full = timed(lambda: full.render_lidar(poses[0], boxes, names), args.repeats)
    points = full.render_lidar(poses[0], boxes, names).shape[1]

    sparse_lidar = LidarSpec(num_beams=8, horizontal_resolution_deg=2.0)
    small = SensorRenderer(city, rig=default_rig(tuple(args.naive_size)), lidar=sparse_lidar)
    fast_small_cam = timed(lambda: small.render_cameras(poses[0], boxes, names, cameras=["CAM_F0"]), args.repeats)
    naive_small_cam = timed(lambda: naive_camera(small, "CAM_F0", poses[0], boxes), 1)
    fast_small_lidar = timed(lambda: small.render_lidar(poses[0], boxes, names), args.repeats)
    naive_small_lidar = timed(lambda: naive_lidar(small, poses[0], boxes), 1)

    w, h = full.rig["CAM_F0"].image_size
    print(f"scene: grid city, {len(boxes)} vehicle boxes, OMP threads as set by the environment")
    print(f"{'case':58s} {'fast ms':>9s} {'naive ms':>10s} {'speed-up':>9s}")
    print(f"{f'camera {w}x{h}, per camera, new pose each frame':58s} {per_camera_moving:9.2f} {'':>10s} {'':>9s}")
    print(f"{f'camera {w}x{h}, per camera, same pose (raster cached)':58s} {per_camera_static:9.2f}")
    print(f"{f'material raster {full.raster_size}x{full.raster_size} (once per pose)':58s} {raster_ms:9.2f}")
    sweep = f"lidar {full.lidar.num_beams}x{full.lidar.num_azimuths} rays, per sweep ({points} pts)"
    print(f"{sweep:58s} {lidar_full:9.2f}")
    sw, sh = args.naive_size
    print(f"{f'camera {sw}x{sh} (CAM_F0) vs per-pixel loop':58s} {fast_small_cam:9.2f} {naive_small_cam:10.1f} "
          f"{naive_small_cam / fast_small_cam:8.0f}x")  # fmt: skip
    print(f"{f'lidar {small.lidar.num_beams}x{small.lidar.num_azimuths} rays vs per-ray loop':58s} "
          f"{fast_small_lidar:9.2f} {naive_small_lidar:10.1f} "
          f"{naive_small_lidar / fast_small_lidar:8.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
