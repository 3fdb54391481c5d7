"""tracking.tensorboard: metrics.csv's rows and the config as TensorBoard event files, read
back with TensorBoard's own event reader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from harness.config import load_config
from harness.errors import ConfigError
from harness.tracking import RunStore

TINY = [
    "tracking.wandb=disabled",
    "tracking.tensorboard=true",
    "env.num_envs=64",
    "algo.num_steps=8",
    "experiment.log_interval=2",
    "experiment.checkpoint_interval=2",
    "experiment.total_env_steps=4096",  # 8 iterations, a row every 2
]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def logged_hparams(run_dir: Path) -> dict[str, object]:
    """The HParams tab's session: each hyperparameter's value."""
    found: dict[str, object] = {}
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(
                    value.metadata.plugin_data.content
                )
                for key, v in data.session_start_info.hparams.items():
                    found[key] = getattr(v, v.WhichOneof("kind"))
    return found


def test_tensorboard_holds_every_metrics_row_and_the_config(tmp_path: Path) -> None:
    from harness.runner import train

    run_dir = train(
        load_config(overrides=[*TINY, "algo.lr=0.002"]), run_dir=tmp_path / "run"
    ).run_dir
    rows = RunStore.open(run_dir).metrics()
    logged = scalars(run_dir)
    for column in ("episode_return", "policy_loss", "value_loss", "env_steps_per_second"):
        assert [step for step, _ in logged[column]] == list(rows["env_steps"])
        assert [v for _, v in logged[column]] == pytest.approx(
            list(rows[column]), rel=1e-6, nan_ok=True
        )
    hparams = logged_hparams(run_dir)
    assert hparams["algo.lr"] == 0.002 and hparams["env.name"] == "cartpole"
    assert hparams["env.num_envs"] == 64
    summary = RunStore.open(run_dir).summary()
    assert logged["hparams/final_return"][0][1] == pytest.approx(summary["final_return"])


def test_a_resumed_run_has_each_step_once(tmp_path: Path) -> None:
    from harness.runner import resume, train

    def interrupt(row) -> None:
        if row["iteration"] == 6:
            raise KeyboardInterrupt

    config = load_config(overrides=[*TINY, "experiment.checkpoint_interval=3"])
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=tmp_path / "run", on_log=interrupt)
    resume(tmp_path / "run")  # from iteration 3: rows 4 and 6 are trained and logged again
    rows = RunStore.open(tmp_path / "run").metrics()
    logged = scalars(tmp_path / "run")["episode_return"]
    assert [step for step, _ in logged] == list(rows["env_steps"]) == [1024, 2048, 3072, 4096]
    assert [v for _, v in logged] == pytest.approx(
        list(rows["episode_return"]), rel=1e-6, nan_ok=True
    )


def test_tensorboard_is_off_by_default(tmp_path: Path) -> None:
    from harness.runner import train

    overrides = [k for k in TINY if not k.startswith("tracking.tensorboard")]
    run_dir = train(load_config(overrides=overrides), run_dir=tmp_path / "run").run_dir
    assert not (run_dir / "tensorboard").exists()


def test_without_the_package_the_error_names_the_key(tmp_path: Path, monkeypatch) -> None:
    from harness.runner import train

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError, match=r"tracking.tensorboard needs the tensorboard package"):
        train(load_config(overrides=TINY), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_each_batched_member_has_its_own_event_files(tmp_path: Path) -> None:
    from harness.members import Member, train_members

    members = [
        Member(load_config(overrides=[*TINY, f"experiment.seed={seed}"]), tmp_path / f"m{seed}")
        for seed in (1, 2)
    ]
    train_members(members)
    for member in members:
        rows = RunStore.open(member.run_dir).metrics()
        logged = scalars(member.run_dir)["episode_return"]
        assert [step for step, _ in logged] == list(rows["env_steps"])
        assert [v for _, v in logged] == pytest.approx(
            list(rows["episode_return"]), rel=1e-6, nan_ok=True
        )
