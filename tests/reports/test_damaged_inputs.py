"""Damaged run files in a report: a metrics row cut off mid-write is dropped and the run
listed under "Repaired inputs"; other damage skips the run under "Skipped inputs"; the
inputs themselves are never rewritten."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.config import load_config
from harness.errors import RunDirError
from harness.runner import train
from harness.tracking import RunStore
from reports.collect import collect
from reports.render import write_report


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = load_config(
        overrides=[
            "tracking.wandb=disabled",
            "env.num_envs=64",
            "algo.num_steps=8",
            "experiment.log_interval=2",
            "experiment.total_env_steps=5120",  # 5 rows
        ]
    )
    return train(config, run_dir=tmp_path_factory.mktemp("runs") / "run").run_dir


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_row_cut_off_mid_write_is_dropped_and_listed(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path / "inputs" / "cut")
    metrics = run / "metrics.csv"
    whole = pd.read_csv(metrics)
    text = metrics.read_bytes()
    last_row = text.rstrip(b"\r\n").rsplit(b"\n", 1)[1]
    cut = text[: len(text) - len(last_row) // 2 - 2]  # half the last row, no line end
    metrics.write_bytes(cut)

    collection = collect([tmp_path / "inputs"])
    curve = collection.curves
    assert len(curve) == len(whole) - 1
    assert curve["episode_return"].iloc[-1] == pytest.approx(whole["episode_return"].iloc[-2])
    assert curve["env_steps"].iloc[-1] == whole["env_steps"].iloc[-2]
    note = f"{run}: dropped line {len(whole) + 1} of metrics.csv, a row cut off mid-write"
    assert collection.repaired == [note] and collection.problems == []

    out = tmp_path / "report"
    write_report([tmp_path / "inputs"], out, reps=100)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["repaired"] == [note] and manifest["problems"] == []
    assert "<h2>Repaired inputs</h2>" in (out / "report.html").read_text()
    assert f"## Repaired inputs\n\n- {note}" in (out / "report.md").read_text()
    assert metrics.read_bytes() == cut  # the input is read, never rewritten


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda row: row.replace(",", ",,", 1), "{n} cells for {m} columns"),
        (lambda row: "1.0x" + row[row.index(",") :], "{first} is '1.0x', not a number"),
        (lambda row: "\x00\x01" + row, "{first} is '\\x00\\x01"),
    ],
    ids=["extra-cell", "non-numeric-cell", "binary-garbage"],
)
def test_damaged_metrics_skip_the_run(finished_run, tmp_path: Path, damage, message: str) -> None:
    good = copy_run(finished_run, tmp_path / "inputs" / "good")
    bad = copy_run(finished_run, tmp_path / "inputs" / "bad")
    lines = (bad / "metrics.csv").read_text().splitlines(keepends=True)
    n_columns = len(lines[0].split(","))
    lines[2] = damage(lines[2])
    (bad / "metrics.csv").write_text("".join(lines))

    with pytest.raises(RunDirError) as err:
        RunStore.open(bad).metrics()
    text = str(err.value)
    assert text.startswith(f"{bad / 'metrics.csv'}: damaged at line 3: ") and "\n" not in text
    first = lines[0].split(",")[0]
    assert message.format(n=n_columns + 1, m=n_columns, first=first) in text

    out = tmp_path / "report"
    write_report([tmp_path / "inputs"], out, reps=100)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["problems"] == [f"{bad}: skipped ({text})"] and manifest["repaired"] == []
    assert "<h2>Skipped inputs</h2>" in (out / "report.html").read_text()
    runs = collect([tmp_path / "inputs"]).runs
    assert list(runs["run_id"]) == [str(good)]


def test_bench_rows_without_their_machine_are_reported_and_listed(tmp_path: Path) -> None:
    """A bench file with only the required keys (mode, num_envs, steps_per_second), as a
    hand-written or other tool's file has: its figures are in the report, the missing
    machine columns are named under "Repaired inputs", nothing else in the file is lost."""
    rows = [
        {"mode": "env", "num_envs": n, "steps_per_second": 1000.0 * n, "note": "by hand"}
        for n in (64, 256, 1024)
    ]
    (tmp_path / "bench.json").write_text(json.dumps(rows))
    out = tmp_path / "report"
    write_report([tmp_path / "bench.json"], out, reps=100)
    manifest = json.loads((out / "manifest.json").read_text())
    missing = "device_name, driver, torch, cuda, git_commit"
    assert manifest["repaired"] == [f"{tmp_path / 'bench.json'}: no {missing} (shown as missing)"]
    throughput = pd.read_csv(out / "tables" / "throughput.csv")
    assert list(throughput["steps_per_second"]) == [64_000.0, 256_000.0, 1_024_000.0]
    assert list(collect([tmp_path / "bench.json"]).bench["note"]) == ["by hand"] * 3


def edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def damaged_run_report(finished_run: Path, tmp_path: Path, damage) -> tuple[Path, list[str]]:
    """A copy of ``finished_run`` damaged by ``damage(run_dir)`` next to an intact copy,
    reported; the damaged run and the report's skipped inputs. The intact copy must be
    the only run reported."""
    good = copy_run(finished_run, tmp_path / "inputs" / "good")
    bad = copy_run(finished_run, tmp_path / "inputs" / "bad")
    damage(bad)
    out = tmp_path / "report"
    write_report([tmp_path / "inputs"], out, reps=100)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["repaired"] == []
    assert pd.read_csv(out / "tables" / "final_returns.csv")["seeds"].sum() == 1
    assert list(collect([tmp_path / "inputs"]).runs["run_id"]) == [str(good)]
    return bad, manifest["problems"]


MALFORMED = [
    # Valid JSON or YAML of the wrong shape in place of the file vecbench wrote.
    pytest.param(
        "meta.json", "null", "corrupt, expected a JSON object, got NoneType", id="meta-null"
    ),
    pytest.param(
        "summary.json", "[1, 2]", "corrupt, expected a JSON object, got list", id="summary-list"
    ),
    pytest.param(
        "summary.json", '"hi"', "corrupt, expected a JSON object, got str", id="summary-str"
    ),
    pytest.param("config.yaml", "- 1\n- 2\n", "corrupt, expected a mapping", id="config-list"),
    # A key the report reads holding a value of the wrong type.
    pytest.param(
        "meta.json",
        {"context": "trial 3"},
        "context is 'trial 3', not a study, trial and params",
        id="context-str",
    ),
    pytest.param(
        "meta.json",
        {"context": {"study": "s", "trial": 1, "params": [1]}},
        "context.params is [1], not a mapping",
        id="params-list",
    ),
    pytest.param(
        "meta.json",
        {"started_at": 1733150000},
        "started_at is 1733150000, not text",
        id="started-at-int",
    ),
    pytest.param(
        "meta.json",
        {"device_name": ["H200"]},
        "device_name is ['H200'], not text",
        id="device-list",
    ),
    pytest.param(
        "summary.json",
        {"completed": "yes"},
        "completed is 'yes', not true or false",
        id="completed-str",
    ),
    pytest.param(
        "summary.json",
        {"final_return": "41.7"},
        "final_return is '41.7', not a number",
        id="final-str",
    ),
    pytest.param(
        "summary.json",
        {"env_steps_per_second": {}},
        "env_steps_per_second is {}, not a number",
        id="throughput-obj",
    ),
]


@pytest.mark.parametrize(("name", "content", "reason"), MALFORMED)
def test_malformed_run_file_skips_only_that_run(
    finished_run: Path, tmp_path: Path, name: str, content: str | dict, reason: str
) -> None:
    """A file replaced by valid JSON or YAML of the wrong shape, or holding a value of the
    wrong type under a key the report reads: that run is skipped with the file and key
    named, every other run is reported."""

    def damage(run: Path) -> None:
        if isinstance(content, dict):
            edit_json(run / name, **content)
        else:
            (run / name).write_text(content)

    bad, problems = damaged_run_report(finished_run, tmp_path, damage)
    assert problems == [f"{bad}: skipped ({bad / name}: {reason})"]


@pytest.mark.parametrize(
    ("name", "damage", "reason"),
    [
        ("meta.json", lambda p: p.write_bytes(b'{"\x87": 1}'), "corrupt JSON: 'utf-8' codec"),
        ("metrics.csv", lambda p: p.write_text(p.read_text().splitlines(True)[0]), "holds no rows"),
        ("metrics.csv", lambda p: p.unlink(), "missing, the run never logged"),
        ("summary.json", lambda p: edit_json(p, completed=False), "the run did not complete"),
    ],
    ids=["meta-not-utf8", "metrics-header-only", "metrics-missing", "not-completed"],
)  # fmt: skip
def test_skip_reason_names_the_file(
    finished_run: Path, tmp_path: Path, name: str, damage, reason: str
) -> None:
    bad, problems = damaged_run_report(finished_run, tmp_path, lambda run: damage(run / name))
    assert len(problems) == 1
    assert problems[0].startswith(f"{bad}: skipped ({bad / name}: {reason}")


@pytest.mark.parametrize(
    ("order", "dropped", "note"),
    [
        # Two processes resumed from the checkpoint at row 2 and logged rows 3 to 5 each.
        ([1, 2, 3, -3, 4, -4, 5, -5], [4, 6, 8], "dropped lines 4, 6, 8 of metrics.csv"),
        # Rows 3 to 5 logged again after them.
        ([1, 2, 3, 4, 5, -3, -4, -5], [4, 5, 6], "dropped lines 4, 5, 6 of metrics.csv"),
    ],
    ids=["interleaved", "appended-again"],
)
def test_rows_logged_twice_keep_the_last_per_env_steps(
    finished_run: Path, tmp_path: Path, order: list[int], dropped: list[int], note: str
) -> None:
    """metrics.csv with rows at the same env_steps, as two processes that resume one run
    at once write it: the last row per env_steps is kept, in env_steps order, and the run
    is listed under "Repaired inputs" with the lines dropped. Row -k is row k logged again
    (its return plus 1000, to tell the two apart)."""
    run = copy_run(finished_run, tmp_path / "inputs" / "twice")
    metrics = run / "metrics.csv"
    whole = pd.read_csv(metrics)
    again = whole.assign(episode_return=whole["episode_return"] + 1000)
    rows = [whole.iloc[k - 1] if k > 0 else again.iloc[-k - 1] for k in order]
    pd.DataFrame(rows).to_csv(metrics, index=False)
    written = metrics.read_bytes()

    collection = collect([tmp_path / "inputs"])
    curve = collection.curves
    assert list(curve["env_steps"]) == list(whole["env_steps"])
    expected = [whole.iloc[0], whole.iloc[1], *(again.iloc[k] for k in (2, 3, 4))]
    assert list(curve["episode_return"]) == pytest.approx([r["episode_return"] for r in expected])
    assert len(dropped) == len(order) - len(whole)
    full_note = f"{run}: {note}, env_steps logged again further down"
    assert collection.repaired == [full_note] and collection.problems == []

    out = tmp_path / "report"
    write_report([tmp_path / "inputs"], out, reps=100)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["repaired"] == [full_note] and manifest["problems"] == []
    assert metrics.read_bytes() == written  # the input is read, never rewritten


def test_rows_out_of_env_steps_order_are_sorted_and_listed(
    finished_run: Path, tmp_path: Path
) -> None:
    run = copy_run(finished_run, tmp_path / "inputs" / "unordered")
    metrics = run / "metrics.csv"
    whole = pd.read_csv(metrics)
    whole.iloc[[0, 2, 1, 3, 4]].to_csv(metrics, index=False)

    collection = collect([tmp_path / "inputs"])
    assert list(collection.curves["env_steps"]) == list(whole["env_steps"])
    assert list(collection.curves["episode_return"]) == pytest.approx(whole["episode_return"])
    assert collection.repaired == [f"{run}: put the rows of metrics.csv in env_steps order"]


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """A journal file holding study "tiny": four trials of x², x in [0, 1]."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "study" / "journal.log"
    path.parent.mkdir()
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="tiny", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=4)
    return path


@pytest.mark.parametrize("form", ["{path}", "journal:{path}"], ids=["plain-path", "journal-url"])
def test_storage_takes_a_journal_file(journal: Path, tmp_path: Path, form: str) -> None:
    """--storage takes a journal file as `vecbench study status` does: by its plain path
    (as the README says) and as the journal:<path> that `study run` prints."""
    from harness.cli import main

    out = tmp_path / "report"
    storage = form.format(path=journal)
    assert main(["report", "--storage", storage, "--study", "tiny", "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert "Study: tiny" in manifest["sections"] and manifest["problems"] == []
    trials = pd.read_csv(out / "tables" / "tiny_trials.csv")
    assert list(trials["value"]) == pytest.approx(list(trials["x"] ** 2))


@pytest.mark.parametrize(
    "form",
    ["sqlite:///{dir}/studies.db", "journal:{dir}/journal.log", "{dir}/journal.log"],
    ids=["sqlite", "journal-url", "plain-path"],
)
def test_storage_file_that_does_not_exist_is_refused_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture, form: str
) -> None:
    from harness.cli import main

    inside = tmp_path / "none"
    inside.mkdir()
    storage = form.format(dir=inside)
    out = tmp_path / "report"
    assert main(["report", "--storage", storage, "--study", "x", "-o", str(out)]) == 2
    missing = storage.split(":")[-1].lstrip("/")
    err = capsys.readouterr().err
    assert err.startswith("error: storage ") and f"/{missing} does not exist\n" in err
    assert list(inside.iterdir()) == [] and not out.exists()


def test_dangling_json_link_beside_a_run_is_not_read(finished_run: Path, tmp_path: Path) -> None:
    """A *.json link to a file since removed (a bench result moved away) is not a bench
    result: the runs beside it are reported."""
    run = copy_run(finished_run, tmp_path / "inputs" / "run")
    (tmp_path / "inputs" / "bench.json").symlink_to(tmp_path / "moved.json")
    collection = collect([tmp_path / "inputs"])
    assert list(collection.runs["run_id"]) == [str(run)] and collection.bench.empty
