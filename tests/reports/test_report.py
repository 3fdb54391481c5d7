"""A report built from real tiny runs, a real tiny study and a bench result; every table's
numbers traced back to the files the runs wrote."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.bench import run_bench, write_results
from harness.cli import main
from harness.config import load_config
from harness.runner import train
from reports import stats
from reports.collect import ReportError
from reports.render import write_report
from studies.run import run_study
from studies.spec import load_study

TINY = [
    "tracking.wandb=disabled",
    "env.num_envs=64",
    "algo.num_steps=8",
    "experiment.log_interval=2",
    "experiment.total_env_steps=8192",
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    for name, lr in (("fast", "1e-3"), ("slow", "1e-4")):
        for seed in (0, 1, 2):
            config = load_config(
                overrides=[
                    *TINY,
                    f"experiment.name={name}",
                    f"algo.lr={lr}",
                    "algo.lr_schedule=fixed",
                    f"experiment.seed={seed}",
                ]
            )
            train(config, run_dir=root / "runs" / f"{name}-{seed}")
    study = root / "robust.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "name": "robust",
                "study_dir": str(root / "studies" / "robust"),
                "config": {
                    "tracking": {"wandb": "disabled"},
                    "env": {"num_envs": 64},
                    "algo": {"num_steps": 8},
                    "experiment": {"total_env_steps": 4096},
                },
                "space": {
                    "env.randomization.pole_length.high": {
                        "type": "categorical",
                        "choices": [0.5, 1.0],
                    }
                },
                "objective": "eval_return",
                "evaluation": {
                    "episodes": 16,
                    "set": ["env.randomization.pole_length={low: 0.2, high: 1.5}"],
                },
                "sampler": {"name": "grid"},
            }
        )
    )
    spec = yaml.safe_load(study.read_text())
    spec["config"]["env"]["randomization"] = {"pole_length": {"low": 0.4, "high": 0.5}}
    study.write_text(yaml.safe_dump(spec))
    run_study(load_study(study))
    rows = run_bench(
        load_config(overrides=["tracking.wandb=disabled"]),
        [16, 64],
        ("env", "inference"),
        steps=5,
        repeats=3,
    )
    write_results(rows, root / "bench" / "cartpole")
    return root


@pytest.fixture(scope="module")
def report(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report([inputs], out, threshold=30.0, reps=500)
    return out


def table(report: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(report / "tables" / f"{name}.csv")


def stored_finals(inputs: Path, name: str) -> list[float]:
    """Each seed's final return, as the last metrics row and summary.json both say."""
    finals = []
    for run in sorted((inputs / "runs").glob(f"{name}-*")):
        last = pd.read_csv(run / "metrics.csv")["episode_return"].iloc[-1]
        assert json.loads((run / "summary.json").read_text())["final_return"] == pytest.approx(last)
        finals.append(last)
    return finals


def test_files_of_the_report(report: Path) -> None:
    html = (report / "report.html").read_text()
    md = (report / "report.md").read_text()
    pngs = sorted(p.stem for p in (report / "figures").glob("*.png"))
    svgs = sorted(p.stem for p in (report / "figures").glob("*.svg"))
    gifs = sorted(p.stem for p in (report / "figures").glob("*.gif"))
    assert pngs == svgs and len(pngs) >= 8
    configurations = len(table(report, "final_returns"))  # fast, slow and the study's two
    assert gifs == [f"policy_{i}" for i in range(configurations)] and configurations == 4
    assert html.count("<img class='figure'") == len(pngs) + len(gifs)
    assert html.count("src='data:image/gif;base64,") == configurations
    for stem in gifs:
        assert f"figures/{stem}.gif" in md
    assert "data:image/svg+xml;base64," in html and "src='figures/" not in html  # self-contained
    for stem in pngs:
        assert f"figures/{stem}.png" in md
    order = [
        "Summary",
        "Throughput scaling",
        "Learning",
        "Aggregate performance",
        "Study: robust",
        "Metadata",
    ]  # the answer first, where it came from last
    for section in order:
        assert f"<h2>{section}</h2>" in html and f"## {section}" in md
    assert re.findall(r"<h2>(.*?)</h2>", html)[: len(order)] == order
    assert "<NA>" not in html + md and ">nan<" not in html  # missing values read "-"


def test_each_clip_plays_the_best_seed_of_its_configuration(report: Path, inputs: Path) -> None:
    from PIL import Image

    from reports.render import ANIMATION_FRAMES

    finals = table(report, "final_returns")
    md = (report / "report.md").read_text()
    for i, label in enumerate(finals["label"]):  # best configuration first
        caption = re.search(rf"!\[({re.escape(label)}: [^\]]*)\]\(figures/policy_{i}.gif\)", md)
        with Image.open(report / "figures" / f"policy_{i}.gif") as gif:
            assert gif.n_frames == ANIMATION_FRAMES
        if label not in ("fast", "slow"):
            assert caption and "(seed 0, final return" in caption.group(1)  # one seed each
            continue
        finals_by_seed = stored_finals(inputs, label)  # seeds 0, 1, 2
        best = int(np.argmax(finals_by_seed))
        assert caption and caption.group(1) == (
            f"{label}: the greedy policy of its best seed (seed {best}, "
            f"final return {finals_by_seed[best]:.4g})"
        )


def test_iteration_time_traces_back_to_metrics(report: Path, inputs: Path) -> None:
    phases = table(report, "iteration_time").set_index("label")
    for name in ("fast", "slow"):
        rows = pd.concat(
            pd.read_csv(inputs / "runs" / f"{name}-{seed}" / "metrics.csv") for seed in (0, 1, 2)
        )
        assert phases.loc[name, "collection_ms"] == pytest.approx(rows["collection_s"].mean() * 1e3)
        assert phases.loc[name, "update_ms"] == pytest.approx(rows["update_s"].mean() * 1e3)
        assert 0 < phases.loc[name, "collection_share"] < 1


def test_summary_states_what_the_tables_say(report: Path) -> None:
    summary = (report / "report.md").read_text().split("## Summary")[1].split("\n## ")[0]
    throughput = table(report, "throughput")
    peak = throughput.loc[throughput["steps_per_second"].idxmax()]
    assert (
        f"Peak throughput: {peak['steps_per_second']:.3g} env steps/s ({peak['mode']}) "
        f"at {int(peak['num_envs'])} envs" in summary
    )
    finals = table(report, "final_returns")
    assert f"Highest final return: {finals.iloc[0]['label']}, mean" in summary
    aggregates = table(report, "aggregates").sort_values("iqm", ascending=False)
    best = aggregates.iloc[0]
    assert f"IQM of normalised score: {best['label']}, IQM {best['iqm']:.3f}" in summary
    trials = table(report, "robust_best_trials")
    assert f"Study robust: best trial {int(trials.iloc[0]['number'])} by eval_return" in summary
    reached = table(report, "time_to_threshold").dropna(subset=["wall_time_s"])
    expected = (
        f"Fastest to a return of 30: {reached.iloc[0]['label']}"
        if len(reached)
        else "No configuration reached a return of 30."
    )
    assert expected in summary


def test_multi_objective_study_gets_a_pareto_front_and_a_figure_per_objective(
    tmp_path: Path,
) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "study" / "journal.log"
    journal.parent.mkdir()
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(
        study_name="two", storage=storage, directions=["maximize", "maximize"]
    )
    study.set_user_attr(
        "vecbench_spec", yaml.safe_dump({"objective": ["final_return", "env_steps_per_second"]})
    )

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        lr = trial.suggest_float("algo.lr", 1e-4, 1e-2, log=True)
        n = trial.suggest_categorical("env.num_envs", [64, 256, 1024])
        return 500 * lr / (lr + 1e-3), n * 1e3 * (1 - lr)

    study.optimize(objective, n_trials=12)
    out = tmp_path / "report"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "from_an_earlier_report.png").write_bytes(b"")
    write_report([tmp_path / "study"], out, reps=100)
    assert not (out / "figures" / "from_an_earlier_report.png").exists()
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    for name in ("final_return", "env_steps_per_second"):
        assert {f"two_history_{name}", f"two_importance_{name}"} <= figures
        importance = table(out, f"two_importance_{name}")
        assert set(importance["param"]) == {"algo.lr", "env.num_envs"}
    assert {"two_pareto_front", "two_parallel", "two_slices"} <= figures
    html = (out / "report.html").read_text()
    assert "Objective(s): final_return (maximize), env_steps_per_second (maximize)" in html


def test_final_returns_trace_back_to_metrics(report: Path, inputs: Path) -> None:
    finals = table(report, "final_returns").set_index("label")
    for name in ("fast", "slow"):
        values = stored_finals(inputs, name)
        assert finals.loc[name, "seeds"] == 3
        assert finals.loc[name, "final_return_mean"] == pytest.approx(np.mean(values))
        assert finals.loc[name, "final_return_std"] == pytest.approx(np.std(values, ddof=1))


def test_aggregates_trace_back_to_metrics(report: Path, inputs: Path) -> None:
    agg = table(report, "aggregates").set_index("label")
    for name in ("fast", "slow"):
        scores = np.array(stored_finals(inputs, name))[:, None] / 500.0  # cartpole max return
        assert agg.loc[name, "iqm"] == pytest.approx(stats.iqm(scores))
        assert agg.loc[name, "mean"] == pytest.approx(scores.mean())
        assert agg.loc[name, "optimality_gap"] == pytest.approx(1 - scores.mean())
        assert agg.loc[name, "iqm_ci_low"] <= agg.loc[name, "iqm"] <= agg.loc[name, "iqm_ci_high"]
    poi = table(report, "probability_of_improvement").iloc[0]
    x = np.array(stored_finals(inputs, poi["x"]))[:, None]
    y = np.array(stored_finals(inputs, poi["y"]))[:, None]
    assert poi["p_x_better"] == pytest.approx(stats.probability_of_improvement(x, y))


def test_time_to_threshold_traces_back(report: Path, inputs: Path) -> None:
    ttt = table(report, "time_to_threshold").set_index("label")
    for name in ("fast", "slow"):
        steps = []
        for run in sorted((inputs / "runs").glob(f"{name}-*")):
            m = pd.read_csv(run / "metrics.csv")
            hit = m[m["episode_return"] >= 30.0]
            if len(hit):
                steps.append(hit["env_steps"].iloc[0])
        assert ttt.loc[name, "seeds_reaching"] == f"{len(steps)}/3"
        if steps:
            assert ttt.loc[name, "env_steps"] == pytest.approx(np.median(steps))


def test_throughput_and_metadata_trace_back(report: Path, inputs: Path) -> None:
    bench = json.loads((inputs / "bench" / "cartpole.json").read_text())
    tp = table(report, "throughput")
    for row in bench:
        got = tp[(tp["mode"] == row["mode"]) & (tp["num_envs"] == row["num_envs"])]
        assert got["steps_per_second"].iloc[0] == pytest.approx(row["steps_per_second"])
        for spread in ("steps_per_second_min", "steps_per_second_max"):
            assert got[spread].iloc[0] == pytest.approx(row[spread])
    assert "the median of 3 measurements" in (report / "report.md").read_text()
    hw = table(report, "hardware")
    meta = json.loads(next((inputs / "runs").glob("fast-0")).joinpath("meta.json").read_text())
    assert meta["torch"] in set(hw["torch"])
    configs = table(report, "configurations")
    assert meta["config_hash"] in " ".join(configs["config_hashes"])


def test_study_and_robustness_tables_trace_back(report: Path, inputs: Path) -> None:
    import optuna

    from studies.storage import StudyStorage

    storage = StudyStorage(f"journal:{inputs / 'studies' / 'robust' / 'journal.log'}", 10, 60, 1)
    study = optuna.load_study(study_name="robust", storage=storage.optuna)
    trials = table(report, "robust_trials").set_index("number")
    robust = table(report, "robust_robustness").set_index("trial")
    for t in study.get_trials():
        assert trials.loc[t.number, "value"] == pytest.approx(t.value)
        eval_return = t.user_attrs["seed_metrics"][0]["eval_return"]
        final = t.user_attrs["seed_metrics"][0]["final_return"]
        assert robust.loc[t.number, "heldout_return"] == pytest.approx(eval_return)
        assert robust.loc[t.number, "train_return"] == pytest.approx(final)
        run = Path(t.user_attrs["run_dirs"][0])
        assert final == pytest.approx(pd.read_csv(run / "metrics.csv")["episode_return"].iloc[-1])


def test_corrupt_and_partial_runs_are_named_and_skipped(inputs: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(inputs / "runs" / "fast-0", mixed / "good")
    shutil.copytree(inputs / "runs" / "fast-1", mixed / "no-summary")
    (mixed / "no-summary" / "summary.json").unlink()
    shutil.copytree(inputs / "runs" / "fast-2", mixed / "bad-config")
    (mixed / "bad-config" / "config.yaml").write_text("env: [oops\n")
    shutil.copytree(inputs / "runs" / "slow-0", mixed / "bad-metrics")
    (mixed / "bad-metrics" / "metrics.csv").write_text("")
    (mixed / "stray.json").write_text("{not json")
    out = tmp_path / "out"
    write_report([mixed, tmp_path / "missing"], out, reps=100)
    problems = json.loads((out / "manifest.json").read_text())["problems"]
    text = "\n".join(problems)
    assert "no-summary: skipped (" in text and "summary.json: missing" in text
    assert "bad-config: skipped (" in text and "corrupt YAML" in text
    assert "bad-metrics: skipped (" in text
    assert f"{tmp_path / 'missing'}: does not exist" in text
    assert table(out, "final_returns")["seeds"].sum() == 1  # only the good run
    assert "<h2>Skipped inputs</h2>" in (out / "report.html").read_text()


def test_empty_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no runs, studies or benchmark results found in"):
        write_report([tmp_path / "empty"], tmp_path / "out")
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: no runs, studies or benchmark results")


CHROMIUM = [
    "chromium",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_html_renders_in_chromium(report: Path, tmp_path: Path) -> None:
    assert shutil.which("chromium"), "Debian's chromium is needed (make test installs it)"
    page = (report / "report.html").resolve().as_uri()
    figures = len(list((report / "figures").glob("*.png"))) + len(
        list((report / "figures").glob("*.gif"))
    )
    dom = subprocess.run(
        [
            *CHROMIUM,
            f"--user-data-dir={tmp_path / 'a'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--window-size=1280,900",
            "--dump-dom",
            page,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f'data-figures-loaded="{figures}/{figures}"' in dom.stdout  # every figure decoded
    width = int(re.search(r'data-page-width="(\d+)"', dom.stdout).group(1))
    assert width <= 1280  # every table fits a laptop window
    console_errors = [
        line
        for line in dom.stderr.splitlines()
        if "CONSOLE" in line and re.search(r"error", line, re.I)
    ]
    assert console_errors == []
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            *CHROMIUM,
            f"--user-data-dir={tmp_path / 'b'}",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            page,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 0.05  # not blank
    assert len(np.unique(pixels.reshape(-1, 3).round(2), axis=0)) > 50  # text, tables, plots


def test_bench_results_are_strict_json(inputs: Path) -> None:
    """No NaN in a bench JSON (strict readers refuse it): a CPU's GPU memory is null."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in a bench JSON")

    rows = json.loads((inputs / "bench" / "cartpole.json").read_text(), parse_constant=refuse)
    assert rows and all(row["gpu_memory_peak_mb"] is None for row in rows)
