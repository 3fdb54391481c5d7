"""Study storage as a user meets it: passwords never shown, a silent server never hangs."""

from __future__ import annotations

import logging

import pytest

from studies.run import run_study, study_status, worker_launch
from studies.spec import load_study


def test_a_storage_password_is_never_printed_logged_or_put_on_a_command_line(
    write_study, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The test server trusts loopback, so any password connects; it must show up nowhere.
    secret_url = postgres_url.replace("postgres@", "postgres:hunter2@", 1)
    path = write_study(
        "secret",
        space={"env.num_envs": {"type": "categorical", "choices": [16]}},
        sampler={"name": "grid"},
        config={"tracking": {"wandb": "disabled"}, "experiment": {"total_env_steps": 1024}},
    )
    loaded = load_study(path)
    caplog.set_level(logging.INFO, logger="vecbench")
    run_study(loaded, storage_url=secret_url)
    status = study_status(loaded, secret_url)
    assert "hunter2" not in caplog.text and "hunter2" not in status
    assert "postgres:***@" in status and "1/1 trials" in status
    cmd, env = worker_launch(loaded, secret_url, 0, "1", [])
    assert not any("hunter2" in arg for arg in cmd)
    assert env["VECBENCH_STORAGE_URL"] == secret_url  # workers read it from there


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://vb:pw1@host:5432/db", "postgresql://vb:***@host:5432/db"),
        ("postgresql://vb@host/db?password=pw1", "postgresql://vb@host/db?password=***"),
        (
            "postgresql+psycopg://a:pw1@h/d?sslmode=require&PASSWORD=pw1",
            "postgresql+psycopg://a:***@h/d?sslmode=require&PASSWORD=***",
        ),
        ("postgresql:/user:pw1@127.0.0.1:1/db", "postgresql:/user:***@127.0.0.1:1/db"),
        ("user:pw1@host/db", "user:***@host/db"),
        (
            "Could not parse URL 'postgresql:/u:pw1@h/d'",
            "Could not parse URL 'postgresql:/u:***@h/d'",
        ),
        ("postgresql://:pw1@host/db", "postgresql://:***@host/db"),
        ("postgresql://u:pw1@x@host/db", "postgresql://u:***@host/db"),
        ("postgresql://host/db", "postgresql://host/db"),
        ("journal:runs/studies/x/journal.log", "journal:runs/studies/x/journal.log"),
    ],
)
def test_redact_hides_every_form_of_password(url: str, shown: str) -> None:
    from studies.storage import redact

    assert redact(url) == shown
    # A driver's message may quote the host it parsed out of a password holding an @.
    assert "pw1" not in redact(f"could not translate host name 'x@host' ({url})", url)


def test_a_storage_server_that_never_answers_fails_in_one_line(
    write_study, capsys: pytest.CaptureFixture
) -> None:
    """A listener that accepts connections and says nothing (a firewall, a wrong port): the
    connection times out (studies.storage.CONNECT_TIMEOUT_S) with one line, no password."""
    import socket
    import time

    from harness.cli import main
    from studies.storage import CONNECT_TIMEOUT_S

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    path = write_study("silent", space={"algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3}})
    start = time.monotonic()
    try:
        code = main(
            ["study", "status", str(path), "--storage", f"postgresql://u:pw1@127.0.0.1:{port}/db"]
        )
    finally:
        server.close()
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: storage postgresql://u:***@127.0.0.1:{port}/db is unreachable")
    assert "pw1" not in err
    assert elapsed < 3 * CONNECT_TIMEOUT_S
