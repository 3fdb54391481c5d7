"""reports/quadruped_benchmark.sh: each walk trains, evaluates, and says when its training
episodes first tracked the command (a stand-in for vecbench writes the run's metrics)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "reports" / "quadruped_benchmark.sh"

# A walk's log rows: the first two under 0.1 m/s average too few episodes to count.
METRICS = """iteration,env_steps,wall_time_s,episodes,velocity_error
100,409600,20.0,2980,0.40
300,1228800,24.4,1,0.08
500,2048000,28.7,0,0.07
900,3686400,37.2,2750,0.09
1100,4505600,41.5,2749,0.05
"""


def run(tmp_path: Path, parts: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    log = tmp_path / "calls.txt"
    fake = tmp_path / "fake.py"
    fake.write_text(
        "import pathlib, sys\n"
        f"open({str(log)!r}, 'a').write('\\t'.join(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1] == 'train':\n"
        "    run = pathlib.Path(sys.argv[sys.argv.index('--run-dir') + 1])\n"
        "    run.mkdir(parents=True)\n"
        f"    (run / 'metrics.csv').write_text({METRICS!r})\n"
        "else:\n"
        "    print('mean return 1.0 over 256 episodes')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "VECBENCH": f"{sys.executable} {fake}", "PARTS": parts}
    env["PYTHONPATH"] = ":".join(sys.path)  # pandas for the script's own reading
    env.update(env_vars)
    return subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True
    )


def test_a_walk_trains_evaluates_and_times_the_first_row_that_counts(tmp_path: Path) -> None:
    done = run(tmp_path, "sac ppo", SAC_ENV_STEPS="123", SET="tracking.wandb=disabled")
    assert done.returncode == 0, done.stderr
    calls = [line.split("\t") for line in (tmp_path / "calls.txt").read_text().splitlines()]
    assert [c[0] for c in calls] == ["train", "eval", "train", "eval"]
    sac = calls[0]
    assert "algo.name=sac" in sac and "experiment.total_env_steps=123" in sac
    assert sac[-1] == "tracking.wandb=disabled"
    assert calls[1][1:] == [str(tmp_path / "out" / "walk-sac"), "--episodes", "256"]
    reached = (tmp_path / "out" / "reached-sac.txt").read_text()
    assert "at 37.2 s of training, 3,686,400 env steps (2750 episodes" in reached
    assert (tmp_path / "out" / "eval-ppo.txt").read_text().startswith("mean return 1.0")


def test_an_unknown_part_is_named(tmp_path: Path) -> None:
    done = run(tmp_path, "td3")
    assert done.returncode == 2 and "unknown part: td3 (env, ppo, sac)" in done.stderr
