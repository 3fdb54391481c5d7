"""reports/gpu_benchmark.sh runs the parts it is given, in order, with REPEATS passed to
every bench call (a stand-in for vecbench records the calls)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "reports" / "gpu_benchmark.sh"


def calls(tmp_path: Path, *parts: str, **env_vars: str) -> list[list[str]]:
    log = tmp_path / "calls.txt"
    fake = tmp_path / "fake.py"
    fake.write_text(
        f"import sys\nopen({str(log)!r}, 'a').write('\\t'.join(sys.argv[1:]) + '\\n')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "VECBENCH": f"{sys.executable} {fake}"}
    env.update(env_vars)
    subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), *parts], env=env, check=True)
    return [line.split("\t") for line in log.read_text().splitlines()]


def test_parts_run_in_order_and_each_bench_call_takes_the_repeats(tmp_path: Path) -> None:
    made = calls(tmp_path, "launch", "arm", "report", REPEATS="3", SET="a.b=1 c.d=2")
    benches = [c for c in made if c[0] == "bench"]
    assert [c[c.index("--modes") + 1] for c in benches] == ["launch"] * 4 + ["env"] * 2
    assert all(c[1:3] == ["--repeats", "3"] and "cuda" in c for c in benches)
    assert all(c[-3:] == ["--set", "a.b=1", "c.d=2"] for c in benches)  # after the part's own
    assert made[-1][:2] == ["report", str(tmp_path / "out" / "bench")]


@pytest.mark.parametrize("parts", [(), ("train",)])
def test_without_repeats_bench_keeps_its_own_default(tmp_path: Path, parts) -> None:
    made = calls(tmp_path, *parts)
    assert made and not any("--repeats" in c or c.count("--set") > 1 for c in made)
    if parts:
        assert {c[c.index("--modes") + 1] for c in made} == {"train"}
