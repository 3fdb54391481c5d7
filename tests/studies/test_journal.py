"""A study's journal file after a crash: a cut-off last line is set aside before anything
is appended, and a damaged line is one error naming the file."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from harness.cli import main
from studies.engine import open_study
from studies.spec import load_study

TINY = {
    "tracking": {"wandb": "disabled"},
    "algo": {"num_steps": 4},
    "experiment": {"total_env_steps": 1024},
}


def _read(journal: Path) -> optuna.Study:
    """The study as Optuna alone (or optuna-dashboard) reads it."""
    backend = JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal)))
    return optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(backend))


def _records(journal: Path) -> list[dict]:
    return [json.loads(line) for line in journal.read_bytes().splitlines()]


def test_a_journal_cut_off_mid_line_is_mended_and_the_study_completes(
    write_study, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    path = write_study(
        space={"env.num_envs": {"type": "categorical", "choices": [16, 32]}},
        sampler={"name": "grid"},
        config=TINY,
        heartbeat_interval_s=0.5,
        heartbeat_grace_s=1.0,  # the trial whose end was cut off is retried at once
    )
    assert main(["study", "run", str(path)]) == 0
    journal = load_study(path).study_dir / "journal.log"
    kept = {t.number: t for t in _read(journal).get_trials() if t.state == TrialState.COMPLETE}
    assert sorted(kept) == [0, 1]
    # A crash (or a full disk) 5 bytes before the end of the last record: trial 1's end.
    whole = journal.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    journal.write_bytes(whole[:-5])
    capsys.readouterr()
    assert main(["study", "status", str(path)]) == 0  # Optuna reads past a partial last line
    assert "complete 1, running 1" in capsys.readouterr().out

    caplog.set_level(logging.INFO, logger="vecbench")
    assert main(["study", "run", str(path)]) == 0
    side = journal.with_name("journal.log.partial")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{journal}: its last line was cut off (by a crash or a full disk?); set its "
        f"{len(last) - 5} bytes aside in {side}"
    ]
    assert side.read_bytes() == last[:-5] + b"\n"
    _records(journal)  # every line reads as JSON again
    study = _read(journal)
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[0].values == kept[0].values  # the finished trial is kept as it was
    assert by_number[0].datetime_complete == kept[0].datetime_complete
    assert by_number[1].state == TrialState.FAIL  # its end was lost: failed and retried
    (retry,) = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == 1]
    assert retry.state == TrialState.COMPLETE and retry.params == by_number[1].params
    capsys.readouterr()
    assert main(["study", "status", str(path)]) == 0
    assert "2/2 trials; complete 2, fail 1" in capsys.readouterr().out


def test_a_line_being_written_under_the_lock_is_never_cut(write_study) -> None:
    """A writer holding the journal's lock mid-line: another worker's append waits for the
    lock, and then finds the line whole."""
    loaded = load_study(write_study(space={"algo.lr": {"type": "float", "low": 0.1, "high": 1}}))
    study, storage = open_study(loaded)
    journal = storage.journal_path
    assert journal is not None
    lock = JournalFileOpenLock(str(journal))  # the lock Optuna's own writers take
    lock.acquire()
    record = json.dumps({"op_code": 2, "worker_id": "w", "study_id": 0, "user_attr": {"a": 1}})
    with open(journal, "ab") as f:
        f.write(record[:10].encode())
        f.flush()
        appended = threading.Thread(target=study.set_user_attr, args=("b", 2))
        appended.start()
        appended.join(timeout=0.5)
        assert appended.is_alive()  # waiting for the lock, not cutting the line
        f.write(record[10:].encode() + b"\n")
    lock.release()
    appended.join(timeout=30)
    assert not appended.is_alive()
    assert not journal.with_name("journal.log.partial").exists()
    assert _records(journal)[-2]["user_attr"] == {"a": 1}  # whole, and before the append
    assert _read(journal).user_attrs["b"] == 2


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_damaged_journal_line_is_one_error_naming_the_file(
    write_study, capsys: pytest.CaptureFixture, command: str
) -> None:
    path = write_study(
        space={"env.num_envs": {"type": "categorical", "choices": [16, 32]}},
        sampler={"name": "grid"},
        config=TINY,
    )
    _, storage = open_study(load_study(path))
    journal = storage.journal_path
    assert journal is not None
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) > 3
    # A record cut off and then written onto: half of line 2 runs into line 3.
    journal.write_bytes(b"".join([lines[0], lines[1][:20], *lines[2:]]))
    capsys.readouterr()
    assert main(["study", command, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {journal}: line 2 is not a valid journal record"), err
