"""vecbench eval --video: each task's clip read back frame by frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.config import load_config
from harness.runner import train
from harness.video import FPS, SIZE

TASKS = {
    "cartpole": ["env.num_envs=16", "experiment.total_env_steps=512"],
    "arm": ["env.name=arm", "env.num_envs=16", "experiment.total_env_steps=512"],
    "quadruped": ["env.name=quadruped", "env.num_envs=8", "experiment.total_env_steps=256"],
}


@pytest.fixture(scope="module", params=list(TASKS))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = load_config(overrides=["tracking.wandb=disabled", *TASKS[request.param]])
    return train(config, run_dir=tmp_path_factory.mktemp(request.param) / "run").run_dir


def gif_frames(path: Path) -> tuple[list[np.ndarray], int]:
    from PIL import Image, ImageSequence

    with Image.open(path) as gif:
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
        durations = [f.info["duration"] for f in ImageSequence.Iterator(gif)]
    return frames, sum(durations)


def test_gif_has_every_frame_and_the_policy_moves(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "clip.gif"
    assert main(["eval", str(run), "--video", str(out), "--video-steps", "40"]) == 0
    assert f"video of 4 envs, 40 frames: {out}" in capsys.readouterr().out
    frames, total_ms = gif_frames(out)
    assert len(frames) == 40 and total_ms == 40 * (1000 // FPS)
    assert frames[0].shape == (2 * SIZE[0], 2 * SIZE[1], 3)  # four envs, two by two
    scene = [f[:-3].astype(float) for f in frames]  # without the progress line
    assert all(f.std() > 10 for f in scene)  # not blank
    moved = np.abs(scene[-1] - scene[0]).mean(axis=2) > 20
    h, w = SIZE
    for r in range(2):  # every tile changes between the first and the last frame
        for c in range(2):
            assert moved[r * h : (r + 1) * h, c * w : (c + 1) * w].sum() > 50


def test_mp4_reads_back_with_its_frame_count(run: Path, tmp_path: Path) -> None:
    import imageio_ffmpeg

    out = tmp_path / "clip.mp4"
    assert main(["eval", str(run), "--video", str(out), "--video-steps", "12"]) == 0
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8) for f in reader]
    assert meta["size"] == (2 * SIZE[1], 2 * SIZE[0]) and len(frames) == 12
    assert max(f.std() for f in frames) > 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--video", "clip.avi"], "clip.avi: a video is .gif or .mp4"),
        (["--video", "clip.gif", "--video-envs", "0"], "--video-envs and --video-steps"),
    ],
)
def test_bad_video_settings_are_one_line_errors(
    tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    args = [str(tmp_path / a) if a.startswith("clip") else a for a in args]
    assert main(["eval", str(tmp_path), *args]) == 2  # refused before the run is read
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_training_sends_policy_videos_to_wandb(tmp_path: Path) -> None:
    from PIL import Image

    from tests.helpers.wandb_records import logged_history, run_file

    config = load_config(
        overrides=[
            "tracking.wandb=offline",
            "tracking.video_interval=4",
            "env.num_envs=16",
            "experiment.log_interval=2",
            "experiment.total_env_steps=2560",  # 10 iterations: videos at 4, 8 and the last
        ]
    )
    result = train(config, run_dir=tmp_path / "run")
    gifs = sorted((result.run_dir / "videos").glob("*.gif"))
    assert [p.name for p in gifs] == [
        f"policy-{steps:012d}.gif" for steps in (4 * 256, 8 * 256, 10 * 256)
    ]
    with Image.open(gifs[-1]) as gif:
        assert gif.n_frames == 200 and gif.size == (2 * SIZE[1], 2 * SIZE[0])
    history = logged_history(run_file(result.run_dir))
    videos = [row for row in history if "policy_video/_type" in row]  # W&B nests the media
    assert len(history) == 5 and len(videos) == 3
    assert all(v["policy_video/_type"] == "video-file" for v in videos)
    assert all(v["policy_video/path"].endswith(".gif") for v in videos)
    media = list(result.run_dir.glob("wandb/offline-run-*/files/media/videos/*.gif"))
    assert len(media) == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tracking.video_interval=3", "tracking.video_interval must be 0 or a multiple of"),
        ("tracking.video_interval=-1", "tracking.video_interval must be >= 0"),
    ],
)
def test_bad_video_interval_is_refused(tmp_path: Path, override: str, message: str) -> None:
    from harness.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match=message):
        train(load_config(overrides=["tracking.wandb=disabled", override]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_optimiser_after_a_mujoco_frame_does_not_crash_the_process() -> None:
    """Mesa's EGL loads its own LLVM; Triton's (imported by the first torch.optim
    optimiser, through torch._dynamo) segfaulted when it came second. The renderer loads
    Triton's first, so a process may draw a clip and then build a SAC or TD3 run."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from harness.video import renderer\n"
        "renderer('arm')\n"
        "torch.optim.Adam([torch.zeros(2, requires_grad=True)])\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
