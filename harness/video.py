"""Videos of a trained policy: `vecbench eval RUN_DIR --video out.gif | out.mp4`.

A few envs play the greedy policy side by side, tiled into one frame. Cartpole is drawn in
2-D; the arm and the quadruped are rendered by MuJoCo's own renderer from the same XML
their physics uses, offscreen (EGL: Mesa's on a machine without a GPU, the driver's on a
GPU machine; MUJOCO_GL picks another). GIFs are written by Pillow, MP4s by imageio-ffmpeg
(`pip install -e '.[video]'`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from algos.base import Algorithm
from harness.config import RunConfig
from harness.device import make_generators, resolve_device
from harness.errors import ConfigError
from harness.evaluate import EVAL_SEED_OFFSET
from harness.registry import make_algo, make_env
from harness.tracking import RunStore

SIZE = (240, 320)  # one tile, height x width
FPS = 25  # GIF frame times are whole centiseconds: 40 ms
Renderer = Callable[[object], list[np.ndarray]]  # env -> one [H, W, 3] uint8 image per env


def record_video(
    run_dir: Path,
    out: Path,
    envs: int = 4,
    steps: int = 300,
    device: str | None = None,
    overrides: list[str] | None = None,
    seed: int | None = None,
) -> int:
    """Play the run's greedy policy in ``envs`` envs for ``steps`` steps, tiled, into
    ``out`` (.gif or .mp4); returns the number of frames written."""
    if envs < 1 or steps < 1:
        raise ConfigError(f"--video-envs and --video-steps must be >= 1, got {envs}, {steps}")
    _check_suffix(out)
    store = RunStore.open(Path(run_dir))
    config = store.policy_config(overrides)
    dev = resolve_device(device if device is not None else config.experiment.device)
    seed = config.experiment.seed + EVAL_SEED_OFFSET if seed is None else seed
    env_gen, algo_gen = make_generators(seed, dev)
    shapes = make_env(dataclasses.replace(config.env, num_envs=envs), dev, env_gen)
    algo = make_algo(config.algo, shapes, dev, algo_gen)
    store.load_algo(algo, store.load_checkpoint(dev))
    return play(config, algo, dev, out, envs, steps, seed)


def play(
    config: RunConfig,
    algo: Algorithm,
    device: torch.device,
    out: Path,
    envs: int,
    steps: int,
    seed: int,
) -> int:
    """``algo``'s greedy policy in ``envs`` fresh envs of ``config.env`` (drawn from
    ``seed``) for ``steps`` frames, tiled, into ``out``; returns the number of frames.
    Touches neither the global random state nor a training env."""
    _check_suffix(out)
    generator = torch.Generator(device=device).manual_seed(seed)
    env = make_env(dataclasses.replace(config.env, num_envs=envs), device, generator)
    render = renderer(config.env.name)
    obs = env.reset()
    frames = [tile(render(env))]
    with torch.no_grad():
        for _ in range(steps - 1):
            obs = env.step(algo.policy(obs, deterministic=True)).obs
            frames.append(tile(render(env)))
    for t, frame in enumerate(frames):  # a progress line along the bottom edge
        frame[-3:, : max(1, frame.shape[1] * (t + 1) // len(frames))] = (200, 60, 60)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(frames, out)
    return len(frames)


def _check_suffix(out: Path) -> None:
    if out.suffix not in (".gif", ".mp4"):
        raise ConfigError(f"{out}: a video is .gif or .mp4")


def renderer(task: str) -> Renderer:
    if task == "cartpole":
        return _cartpole
    if task in ("arm", "quadruped"):
        return _MujocoRenderer(task)
    raise ConfigError(f"env.name: no video for the task {task!r}")


def tile(images: list[np.ndarray]) -> np.ndarray:
    """Images in a near-square grid (empty cells black): [rows * H, cols * W, 3]."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    h, w, _ = images[0].shape
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    return grid


def write_video(frames: list[np.ndarray], out: Path) -> None:
    if out.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(out, save_all=True, append_images=images[1:], duration=1000 // FPS, loop=0)
        return
    try:
        import imageio_ffmpeg
    except ImportError as err:
        raise ConfigError(
            f"{out}: MP4 needs imageio-ffmpeg (pip install -e '.[video]'), or write a .gif"
        ) from err
    h, w, _ = frames[0].shape
    writer = imageio_ffmpeg.write_frames(
        str(out), (w, h), fps=FPS, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=8
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def _cartpole(env: object) -> list[np.ndarray]:
    """The track, the cart and the pole of each env, 2.4 m either side of the centre."""
    from PIL import Image, ImageDraw

    h, w = SIZE
    xs = env.state["x"].cpu().numpy()  # type: ignore[attr-defined]
    thetas = env.state["theta"].cpu().numpy()  # type: ignore[attr-defined]
    lengths = env.params["pole_length"].cpu().numpy()  # type: ignore[attr-defined]
    scale = w / 6.0  # pixels per metre: the 4.8 m track with a margin
    ground = int(h * 0.75)
    images = []
    for x, theta, half in zip(xs, thetas, lengths, strict=True):
        image = Image.new("RGB", (w, h), (250, 250, 250))
        draw = ImageDraw.Draw(image)
        draw.line([(w / 2 - 2.4 * scale, ground), (w / 2 + 2.4 * scale, ground)], (90, 90, 90), 2)
        cx = w / 2 + x * scale
        draw.rectangle([cx - 25, ground - 15, cx + 25, ground + 5], fill=(60, 90, 160))
        tip = (
            cx + 2 * half * scale * math.sin(theta),
            ground - 15 - 2 * half * scale * math.cos(theta),
        )
        draw.line([(cx, ground - 15), tip], (200, 120, 40), 6)
        images.append(np.asarray(image))
    return images


class _MujocoRenderer:
    """MuJoCo's renderer over the task's XML; each env's joint positions set in turn."""

    def __init__(self, task: str) -> None:
        # Triton's LLVM must be loaded before Mesa's (EGL's software renderer): the first
        # torch.optim optimiser imports torch._dynamo and with it Triton, which segfaults
        # in a process where Mesa's LLVM is already loaded (a report drawing several
        # runs' clips, SAC and TD3 among them).
        import mujoco
        import torch._dynamo  # noqa: F401

        if task == "arm":
            from envs.arm import MODEL_PATH
        else:
            from envs.quadruped import MODEL_PATH
        self.task, self.mujoco = task, mujoco
        self.model = mujoco.MjModel.from_xml_path(str(MODEL_PATH))
        self.data = mujoco.MjData(self.model)
        try:
            self.renderer = mujoco.Renderer(self.model, *SIZE)
        except Exception as err:  # no OpenGL: the backend's own error names the library
            raise ConfigError(
                f"video of {task}: MuJoCo cannot render offscreen with MUJOCO_GL="
                f"{os.environ['MUJOCO_GL']} ({err}); install pyopengl and Mesa's EGL "
                "(Debian: libegl-mesa0), or set MUJOCO_GL=osmesa with libosmesa6"
            ) from err
        self.camera = mujoco.MjvCamera()
        self.camera.distance = 1.2 if task == "arm" else 1.8
        self.camera.elevation, self.camera.azimuth = -20.0, 120.0

    def __call__(self, env: object) -> list[np.ndarray]:
        mj = self.mujoco
        if self.task == "arm":
            qpos = env.state["q"].cpu().numpy()  # type: ignore[attr-defined]
            targets = env.target().cpu().numpy()  # type: ignore[attr-defined]
        else:
            qpos = np.asarray(env.state["qpos"])  # type: ignore[attr-defined]
            targets = [None] * len(qpos)
        images = []
        for q, target in zip(qpos, targets, strict=True):
            self.data.qpos[:] = q
            mj.mj_forward(self.model, self.data)
            if self.task == "quadruped":  # follow the torso
                self.camera.lookat[:] = self.data.qpos[:3]
            else:
                self.camera.lookat[:] = (0.2, 0.0, 0.25)
            self.renderer.update_scene(self.data, self.camera)
            if target is not None:
                scene = self.renderer.scene
                mj.mjv_initGeom(
                    scene.geoms[scene.ngeom],
                    mj.mjtGeom.mjGEOM_SPHERE,
                    np.array([0.03, 0.0, 0.0]),
                    target.astype(np.float64),
                    np.eye(3).flatten(),
                    np.array([0.9, 0.2, 0.2, 1.0], np.float32),
                )
                scene.ngeom += 1
            images.append(self.renderer.render().copy())
        return images
