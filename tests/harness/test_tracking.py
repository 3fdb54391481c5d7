"""A run directory under file-system faults: one line naming the path and what to do, no
temporary file left behind, and what was written before kept."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.config import load_config
from harness.errors import RunDirError
from harness.tracking import RunStore

TINY = [
    "tracking.wandb=disabled",
    "env.num_envs=64",
    "algo.num_steps=8",
    "experiment.log_interval=2",
    "experiment.checkpoint_interval=2",
    "experiment.total_env_steps=4096",  # 8 iterations, a checkpoint every 2
]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith(("iter", "training", "done"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_run_dir_under_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    run_dir = blocker / "run"
    with pytest.raises(RunDirError, match=f"^{run_dir}: cannot create the run directory"):
        RunStore.create(run_dir, load_config(), {})
    assert main(["train", "--run-dir", str(run_dir), "--set", *TINY]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {run_dir}: cannot create the run directory (")
    assert "choose another --run-dir" in line
    assert blocker.read_text() == "a file where a directory should be"


def test_read_only_parent_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root may write anywhere: the refusal it would meet is simulated
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            if Path(path).parent == parent:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        assert main(["train", "--run-dir", str(parent / "run"), "--set", *TINY]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: {parent / 'run'}: cannot create the run directory")
        assert "make it writable" in line
    finally:
        parent.chmod(0o700)


def full_disk_on_call(n: int, monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    """torch.save writes part of the file, then fails, from its ``n``-th call on."""
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f) -> None:
        calls["n"] += 1
        if calls["n"] < n:
            return real_save(obj, f)
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise exc

    monkeypatch.setattr("harness.tracking.torch.save", save)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "(No space left on device)"),
        (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), "("),
    ],
    ids=["oserror", "torch-runtimeerror"],
)
def test_full_disk_during_a_checkpoint_keeps_the_last_one(
    exc: Exception, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run_dir = tmp_path / "run"
    full_disk_on_call(2, monkeypatch, exc)  # the first checkpoint (iteration 2) succeeds
    assert main(["train", "--run-dir", str(run_dir), "--set", *TINY]) == 2
    line = one_error_line(capsys.readouterr().err)
    checkpoint = run_dir / "checkpoint.pt"
    assert line.startswith(f"error: {checkpoint}: cannot write the checkpoint {reason}")
    assert line.endswith(f"then continue with: vecbench train --resume {run_dir}")
    assert not (run_dir / "checkpoint.pt.tmp").exists()
    store = RunStore.open(run_dir)
    assert store.load_checkpoint(torch.device("cpu"))["iteration"] == 2
    assert list(store.metrics()["iteration"]) == [2, 4]  # rows before the fault are kept
    monkeypatch.undo()  # space freed: the run goes on from its last checkpoint
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert list(store.metrics()["iteration"]) == [2, 4, 6, 8]
    assert store.summary()["completed"] is True


def test_full_disk_while_appending_a_row_leaves_no_half_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStore.create(tmp_path / "run", load_config(), {})
    store.append_metrics({"iteration": 1, "env_steps": 512, "episode_return": 9.5})
    before = (store.dir / "metrics.csv").read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(RunDirError) as err:
        store.append_metrics({"iteration": 2, "env_steps": 1024, "episode_return": 10.5})
    assert str(err.value).startswith(
        f"{store.dir / 'metrics.csv'}: cannot append a metrics row (No space left on device); "
        "free disk space, then continue with: vecbench train --resume"
    )
    assert (store.dir / "metrics.csv").read_bytes() == before


def test_read_only_file_system_for_the_summary_keeps_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStore.create(tmp_path / "run", load_config(), {})
    store.write_summary({"completed": False})

    def read_only(src, dst) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(RunDirError, match=r"summary.json: cannot write \(Read-only file system\)"):
        store.write_summary({"completed": True})
    assert not list(store.dir.glob("*.tmp"))
    monkeypatch.undo()
    assert store.summary() == {"completed": False}


def interrupted_run(tmp_path: Path) -> Path:
    """An offline-W&B run of 12 iterations (a row every 2, a checkpoint every 5) stopped
    by Ctrl-C at iteration 8."""
    from harness.runner import train

    def interrupt(row) -> None:
        if row["iteration"] == 8:
            raise KeyboardInterrupt

    config = load_config(
        overrides=[
            *TINY,
            "tracking.wandb=offline",
            "experiment.checkpoint_interval=5",
            "experiment.total_env_steps=6144",
        ]
    )
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=run_dir, on_log=interrupt)
    return run_dir


def test_wandb_after_resume_logs_each_step_once_and_the_summary_of_summary_json(
    tmp_path: Path,
) -> None:
    from harness.runner import resume
    from tests.helpers.wandb_records import logged_history, logged_summary

    run_dir = interrupted_run(tmp_path)
    resume(run_dir)  # from iteration 5: rows 6 and 8 are trained and written again
    first, second = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    history = logged_history(first) + logged_history(second)
    metrics = RunStore.open(run_dir).metrics()
    assert [h["iteration"] for h in history] == list(metrics["iteration"]) == [2, 4, 6, 8, 10, 12]
    after = [h["episode_return"] for h in history if h["iteration"] > 8]
    assert after == pytest.approx(list(metrics["episode_return"].iloc[4:]))
    summary = RunStore.open(run_dir).summary()
    logged = logged_summary(second)
    assert logged["wall_time_s"] == summary["wall_time_s"]
    assert logged["env_steps"] == summary["env_steps"] == 6144


def test_wandb_rows_a_killed_segment_lost_are_sent_again_on_resume(tmp_path: Path) -> None:
    """kill -9 can stop W&B's writer before it flushes: the segment's offline file then
    holds its header alone, while vecbench-last-step says those steps were sent. A resumed
    run reads what the files hold and first sends metrics.csv's missing rows: every step
    once, in order."""
    import wandb

    from harness.runner import resume
    from harness.wandb_files import read_records
    from tests.helpers.wandb_records import logged_history

    run_dir = interrupted_run(tmp_path)
    # W&B's service writes the offline file after run.finish() returns (on a loaded CPU a
    # truncated file was seen filled again): its writer must be gone, as kill -9 leaves it.
    wandb.teardown()
    (killed,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    killed.write_bytes(killed.read_bytes()[:7])  # what kill -9 left: the header alone
    assert (run_dir / "wandb" / "vecbench-last-step").read_text() == "4096"  # iteration 8
    resume(run_dir)
    wandb.teardown()  # the resumed segment's file complete
    first, second = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert first == killed and read_records(first) == []
    metrics = RunStore.open(run_dir).metrics()
    history = logged_history(second)
    assert [h["iteration"] for h in history] == list(metrics["iteration"]) == [2, 4, 6, 8, 10, 12]
    assert [h["episode_return"] for h in history] == pytest.approx(
        list(metrics["episode_return"]), nan_ok=True
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"env: [broken\n", "corrupt YAML at line 2, column 1: expected ',' or ']'"),
        (
            b"a: &a [x, x, x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
            b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
            b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e]\n",
            "corrupt YAML at line 5, column 4: aliases expand to more than 10,000 values",
        ),
        (b"\xff\xfe e\x00n\x00v\x00", "unreadable ('utf-8' codec can't decode byte 0xff"),
    ],
    ids=["broken", "alias-bomb", "not-utf8"],
)
def test_damaged_config_of_a_run_is_one_line(content: bytes, message: str, tmp_path: Path) -> None:
    store = RunStore.create(tmp_path / "run", load_config(), {})
    (store.dir / "config.yaml").write_bytes(content)
    with pytest.raises(RunDirError) as err:
        store.config()
    assert str(err.value).startswith(f"{store.dir / 'config.yaml'}: {message}")
    assert "\n" not in str(err.value)
