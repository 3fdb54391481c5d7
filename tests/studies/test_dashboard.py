"""vecbench study dashboard: optuna-dashboard serves a study's storage on loopback; a
journal file is also accepted by its plain path, as Optuna's CLI and optuna-dashboard
name it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from harness.cli import main

TINY = {
    "space": {"env.num_envs": {"type": "categorical", "choices": [16, 32]}},
    "sampler": {"name": "grid"},
    "config": {
        "tracking": {"wandb": "disabled"},
        "algo": {"num_steps": 4},
        "experiment": {"total_env_steps": 2048},
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_dashboard_serves_the_study_on_loopback(write_study, tmp_path: Path) -> None:
    path = write_study(**TINY)
    assert main(["study", "run", str(path)]) == 0
    port = free_port()
    command = [sys.executable, "-m", "harness.cli", "study", "dashboard", str(path)]
    server = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        studies = get_json(f"http://127.0.0.1:{port}/api/studies", timeout=60)["study_summaries"]
        (study,) = [s for s in studies if s["study_name"] == "s"]
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", 10)
        trials = detail["trials"]
        assert [t["state"] for t in trials] == ["Complete", "Complete"]
        values = sorted(str(p["param_external_value"]) for t in trials for p in t["params"])
        assert values == ["16", "32"]
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/dashboard/" in out.splitlines()[0]


def test_a_journal_file_is_accepted_by_its_plain_path(write_study, capsys) -> None:
    path = write_study(**TINY)
    assert main(["study", "run", str(path)]) == 0
    capsys.readouterr()
    journal = path.parent / "s" / "journal.log"
    assert main(["study", "status", str(path), "--storage", str(journal)]) == 0
    assert "2/2 trials; complete 2" in capsys.readouterr().out


def test_dashboard_of_a_study_never_run_says_so(write_study, capsys) -> None:
    path = write_study(**TINY)
    assert main(["study", "dashboard", str(path)]) == 2
    assert "study 's' not found" in capsys.readouterr().err
    assert not (path.parent / "s").exists()  # nothing created for it
