"""Run directories cannot be corrupted: one writer per run, users' folders untouched, damaged
records refused on resume, bad numbers and --out refused before any model loads (issue #13, 1-4, 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from test_training_support import use_toy_model

from geffect.cli import main
from geffect.errors import DamagedRunError, InputError, RunInUseError
from geffect.training import checkpoint as ckpt
from geffect.training.claim import LOCK_FILE, claim_run_dir
from geffect.training.config import UnlearnConfig
from geffect.training.records import read_table, table_path
from geffect.training.run import Run
from geffect.training.trainer import unlearn

TESTS = Path(__file__).parent
ARGS = ["--forget", "forget01", "--batch-size", "2", "--probe-size", "2", "--no-progress"]
KEYS = {"effects": ["step", "probe", "instance", "layer", "direction"], "history": ["step"],
        "risks": ["step", "probe", "instance"]}


def tables(path: Path) -> dict[str, pd.DataFrame]:
    return {t: read_table(path, t).sort_values(k, ignore_index=True) for t, k in KEYS.items()}


def assert_same_records(got: Path, expected: Path) -> None:
    want = tables(expected)
    for name, frame in tables(got).items():
        pd.testing.assert_frame_equal(frame, want[name], check_exact=True, obj=name)


def no_load(monkeypatch) -> None:
    """Make any model load fail loudly: the checks under test must come before it."""
    import geffect.models

    def refuse(*_, **__):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(geffect.models, "load", refuse)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# -- 1. one writer per run directory ---------------------------------------------------------------------


def test_a_second_claim_is_refused_naming_the_owner(tmp_path):
    first = claim_run_dir(tmp_path / "run", resume=False)
    owner = json.loads((tmp_path / "run" / "run.json").read_text())["owner"]
    assert owner["pid"] == os.getpid() and owner["host"]
    with pytest.raises(RunInUseError, match=f"in use by a live run \\(pid {os.getpid()} on host"):
        claim_run_dir(tmp_path / "run", resume=True)  # resuming a live run is refused too
    first.release()
    claim_run_dir(tmp_path / "run", resume=False).release()  # released: free again (no run started)


def _claim_in_child(path: Path, release: Path) -> int:
    """Fork a process that claims ``path``, holds it until ``release`` exists (at most 60 s) and exits
    (0 claimed, 3 refused)."""
    pid = os.fork()
    if pid == 0:  # child: exit without cleanup, as a killed process would
        code = 1
        try:
            claim_run_dir(path, resume=False)
            deadline = time.time() + 60
            while not release.exists() and time.time() < deadline:
                time.sleep(0.01)
            code = 0
        except RunInUseError:
            code = 3
        finally:
            os._exit(code)
    return pid


def test_claims_race_exactly_one_winner_and_a_dead_owner_frees_the_run(tmp_path):
    for round_ in range(10):
        path, release = tmp_path / f"run{round_}", tmp_path / f"release{round_}"
        running = [_claim_in_child(path, release) for _ in range(3)]
        codes = []
        while running:  # the winner holds the claim until both others have tried, however slow they start
            for pid in list(running):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    running.remove(pid)
                    codes.append(os.waitstatus_to_exitcode(status))
            if len(codes) >= 2:
                release.touch()
            time.sleep(0.01)
        assert codes == [3, 3, 0], codes
        # the winner exited without releasing: the kernel dropped its lock, so the run is claimable
        claim_run_dir(path, resume=True).release()


RACE_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_training_support import install_toy_model
    install_toy_model()
    from geffect.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _cli(script: Path, *argv: str, pause: float = 0.0, hold: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TEST_OBJECTIVE_PAUSE": str(pause),
           "TEST_OBJECTIVE_HOLD": str(hold or "")}
    return subprocess.Popen([sys.executable, str(script), *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_processes_race_for_one_run_directory(tmp_path, monkeypatch, capsys):
    """Two `geffect unlearn` on one --out at once: one is refused in one line, the other's records are intact."""
    script = tmp_path / "cli.py"
    script.write_text(RACE_SCRIPT.format(tests=str(TESTS)))
    out = tmp_path / "X"
    common = [*ARGS, "--steps", "6", "--out", str(out)]
    runs = {"ga": _cli(script, "unlearn", "--objective", "test_training_support:slow_ga", "--seed", "1",
                       *common, pause=0.3),
            "npo": _cli(script, "unlearn", "--objective", "npo", "--seed", "2", *common, pause=0.3)}
    results = {name: (proc.wait(timeout=600), proc.communicate()[1]) for name, proc in runs.items()}
    winners = [name for name, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    loser_code, loser_err = results[{"ga", "npo"}.difference(winners).pop()]
    assert loser_code == 2 and len(loser_err.strip().splitlines()) == 1, loser_err
    assert "in use by a live run" in loser_err or "already holds a run" in loser_err
    # the directory holds exactly the winner's run: its config, and the records of that run alone
    winner = Run(out)
    assert winner.status == "finished" and winner.config.seed == (1 if winners == ["ga"] else 2)
    use_toy_model(monkeypatch)
    objective = "test_training_support:slow_ga" if winners == ["ga"] else "npo"
    reference = unlearn(objective, forget="forget01", batch_size=2, probe_size=2, steps=6, seed=winner.config.seed,
                        out=tmp_path / "reference", progress=False)
    assert_same_records(out, reference.path)


@pytest.mark.slow
def test_live_run_refuses_writers_and_resume(tmp_path, monkeypatch, capsys):
    """While a run is alive, a new run and a --resume in its directory are refused naming its pid."""
    script = tmp_path / "cli.py"
    script.write_text(RACE_SCRIPT.format(tests=str(TESTS)))
    out, hold = tmp_path / "X", tmp_path / "hold"
    hold.touch()  # the live run's objective waits while this file exists, however slow this test runs
    live = _cli(script, "unlearn", "--objective", "test_training_support:slow_ga", *ARGS, "--steps", "8",
                "--out", str(out), hold=hold)
    try:
        deadline = time.time() + 300
        while json.loads((out / "run.json").read_text() if (out / "run.json").is_file() else "{}").get(
                "status") != "running":
            assert live.poll() is None and time.time() < deadline, live.communicate()
            time.sleep(0.1)
        use_toy_model(monkeypatch)
        assert main(["unlearn", "--objective", "ga", *ARGS, "--steps", "2", "--out", str(out)]) == 2
        assert f"in use by a live run (pid {live.pid} on host" in one_error_line(capsys)
        assert main(["unlearn", "--resume", "--out", str(out), "--no-progress"]) == 2
        assert f"in use by a live run (pid {live.pid}" in one_error_line(capsys)
        assert live.poll() is None  # still alive: it was refused because it lives
    finally:
        hold.unlink()
    assert live.wait(timeout=600) == 0, live.communicate()
    reference = unlearn("test_training_support:slow_ga", forget="forget01", batch_size=2, probe_size=2, steps=8,
                        out=tmp_path / "reference", progress=False)
    assert_same_records(out, reference.path)


# -- 2. a user's folder is never overwritten -------------------------------------------------------------


def test_non_empty_folder_that_is_not_a_run_is_refused(tmp_path, monkeypatch, capsys):
    no_load(monkeypatch)
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "config.yaml").write_text("keep\n")
    assert main(["unlearn", "--objective", "ga", "--steps", "3", "--out", str(folder), *ARGS]) == 2
    assert "is not empty and is not a geffect run directory (it holds config.yaml)" in one_error_line(capsys)
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml"]
    assert (folder / "config.yaml").read_text() == "keep\n"


def test_empty_folder_is_used_and_a_failed_start_leaves_nothing_behind(tmp_path, monkeypatch):
    use_toy_model(monkeypatch)
    empty = tmp_path / "empty"
    empty.mkdir()
    run = unlearn("ga", forget="forget01", steps=1, batch_size=2, probe_size=2, out=empty, progress=False)
    assert run.status == "finished"
    fresh = tmp_path / "fresh"
    with pytest.raises(InputError, match="no split 'forget11'"):
        unlearn("ga", forget="forget11", steps=1, out=fresh, progress=False)
    assert not fresh.exists()  # the claim is undone when the run never started


# -- 3. a killed default run keeps its records; a kill during a flush loses nothing -----------------------

KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_training_support import install_toy_model
    install_toy_model()
    import geffect
    from geffect.training import records

    kill_at = int(sys.argv[2])
    writes = 0
    original = records.write_atomic

    def write_then_die(frame, path):
        # the part's temporary file is written, then the process dies before moving it into place
        global writes
        writes += 1
        if writes == kill_at:
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path.with_name(f".{{path.name}}.tmp"), index=False)
            os.kill(os.getpid(), signal.SIGKILL)
        original(frame, path)

    records.write_atomic = write_then_die
    geffect.unlearn("ga", forget="forget01", out=sys.argv[1], resume=sys.argv[3] == "1", steps=7, batch_size=2,
                    probe_size=2, seed=3, flush_every=2, progress=False)
""")


@pytest.mark.slow
def test_kill_during_flush_then_resume_gives_the_uninterrupted_records(tmp_path, monkeypatch):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(tests=str(TESTS)))
    out = tmp_path / "killed"
    # flushes (3 tables each) after steps 2, 4, 6: write 8 is the history part of the third flush
    proc = subprocess.run([sys.executable, str(script), str(out), "8", "0"], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert proc.returncode == -9, proc.stderr
    assert Run(out).status == "running"
    # default checkpointing follows the flushes: the run holds a checkpoint at its last complete flush
    assert UnlearnConfig.load(out).checkpoint_every is None and ckpt.latest_checkpoint(out)[0] == 4
    assert read_table(out, "history")["step"].tolist() == [0, 1, 2, 3]
    assert list(table_path(out, "history").glob(".*.tmp"))  # the interrupted part never landed
    kept = {p: p.read_bytes() for t in KEYS for p in table_path(out, t).glob("part-*") if int(p.name[14:22]) < 4}

    use_toy_model(monkeypatch)
    with pytest.raises(InputError, match="already holds a run .*has ended, so it can be resumed"):
        unlearn("ga", forget="forget01", out=out, steps=7, batch_size=2, probe_size=2, seed=3, flush_every=2)
    resumed = unlearn(None, out=out, resume=True, progress=False)
    assert resumed.status == "finished"
    assert all(p.read_bytes() == data for p, data in kept.items())  # flushed rows before the checkpoint kept as they were
    reference = unlearn("ga", forget="forget01", out=tmp_path / "reference", steps=7, batch_size=2, probe_size=2,
                        seed=3, flush_every=2, progress=False)
    assert_same_records(out, reference.path)
    assert not list(table_path(out, "history").glob(".*.tmp"))


def test_default_checkpoints_follow_the_flushes():
    config = UnlearnConfig()
    assert config.checkpoint_every is None and config.checkpoint_interval() == config.flush_every
    assert UnlearnConfig(flush_every=4).checkpoint_interval() == 4
    assert UnlearnConfig(checkpoint_every=7).checkpoint_interval() == 7


# -- 4. resume verifies the records it keeps ----------------------------------------------------------------

_CALLS = {"n": 0, "fail_at": None}


def failing_ga(model, forget):
    """GA that raises on call ``_CALLS['fail_at']`` (a run that stops mid-way with a checkpoint)."""
    from geffect.objectives import get_objective

    _CALLS["n"] += 1
    if _CALLS["fail_at"] is not None and _CALLS["n"] >= _CALLS["fail_at"]:
        raise RuntimeError("stopped by the test")
    return get_objective("ga")(model, forget)


def _stopped_run(path: Path, monkeypatch) -> None:
    """A run of 6 steps that failed at step 5 with a checkpoint at step 3 and records flushed to step 3."""
    use_toy_model(monkeypatch)
    _CALLS.update(n=0, fail_at=6)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        unlearn(failing_ga, forget="forget01", steps=6, batch_size=2, probe_size=2, out=path, checkpoint_every=3,
                flush_every=1, progress=False)
    _CALLS.update(fail_at=None)
    assert Run(path).status == "failed" and ckpt.latest_checkpoint(path)[0] == 3


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_refuses_a_damaged_part_before_the_checkpoint(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _stopped_run(run, monkeypatch)
    damaged = sorted(table_path(run, "effects").glob("part-*"))[1]  # steps 1..1: kept by a resume from 3
    _truncate(damaged)
    no_load(monkeypatch)
    assert main(["unlearn", "--resume", "--out", str(run), "--no-progress"]) == 2
    err = one_error_line(capsys)
    assert f"record part {str(damaged)!r} is damaged" in err
    assert damaged.exists()  # nothing deleted


def test_resume_refuses_missing_rows_and_recomputes_rows_after_the_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _stopped_run(run, monkeypatch)
    after = [p for p in table_path(run, "history").glob("part-*") if int(p.name[5:13]) >= 3]
    assert after  # rows after the checkpoint were flushed before the failure
    _truncate(after[0])
    resumed = unlearn(None, out=run, resume=True, progress=False)  # dropped and recomputed
    assert resumed.status == "finished" and resumed.history["step"].tolist() == list(range(6))
    reference = unlearn(failing_ga, forget="forget01", steps=6, batch_size=2, probe_size=2,
                        out=tmp_path / "reference", checkpoint_every=3, flush_every=1, progress=False)
    assert_same_records(run, reference.path)

    other = tmp_path / "other"
    _stopped_run(other, monkeypatch)
    sorted(table_path(other, "history").glob("part-*"))[0].unlink()  # step 0's history row is gone
    with pytest.raises(DamagedRunError, match=r"history.parquet' is damaged: steps \[0\] are missing"):
        unlearn(None, out=other, resume=True, progress=False)


def test_resume_of_a_finished_run_with_a_damaged_part_is_refused(tmp_path, monkeypatch):
    use_toy_model(monkeypatch)
    run = unlearn("ga", forget="forget01", steps=2, batch_size=2, probe_size=2, out=tmp_path / "run",
                  progress=False)
    part = next(table_path(run.path, "risks").glob("part-*"))
    _truncate(part)
    with pytest.raises(DamagedRunError, match=f"record part {str(part)!r} is damaged"):
        unlearn(None, out=run.path, resume=True, progress=False)


# -- 8. numbers and --out are checked before anything loads ------------------------------------------------


@pytest.mark.parametrize("flags, message", [
    (["--lr", "nan"], "'lr' must be a finite number, got nan"),
    (["--lr", "inf", "--optimizer", "sgd"], "'lr' must be a finite number, got inf"),
    (["--set", "weight_decay=.nan"], "'weight_decay' must be a finite number"),
    (["--set", "max_grad_norm=0"], "'max_grad_norm' must be > 0"),
    (["--epochs", "nan"], "'epochs' must be a finite number"),
])
def test_bad_numbers_are_refused_before_loading(flags, message, tmp_path, monkeypatch, capsys):
    no_load(monkeypatch)
    assert main(["unlearn", "--objective", "ga", "--out", str(tmp_path / "r"), *ARGS, *flags]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_out_that_is_a_file_or_cannot_be_created_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    no_load(monkeypatch)
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    assert main(["unlearn", "--objective", "ga", "--out", str(afile), *ARGS]) == 2
    assert "is a file, not a directory" in one_error_line(capsys)
    assert afile.read_text() == "mine\n"
    assert main(["unlearn", "--objective", "ga", "--out", str(afile / "run"), *ARGS]) == 2
    assert "cannot create run directory" in one_error_line(capsys)
    # diagnose checks its out folder before its dry run of the objective loads the model
    assert main(["diagnose", "npo", "--baselines", "", "--out", str(afile), *ARGS]) == 2
    assert f"cannot create run directory {str(afile / 'runs' / 'npo')!r}: {str(afile)!r} is a file" in \
        one_error_line(capsys)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["unlearn", "--objective", "ga", "--out", str(locked), *ARGS]) == 2
        assert "is not writable" in one_error_line(capsys)


def test_lock_file_is_hidden_from_readers(tmp_path, monkeypatch):
    use_toy_model(monkeypatch)
    run = unlearn("ga", forget="forget01", steps=1, batch_size=2, probe_size=2, out=tmp_path / "r", progress=False)
    assert (run.path / LOCK_FILE).exists() and run.info["owner"]["pid"] == os.getpid()
    assert list(run.effects["step"].unique()) == [0]  # readers skip the hidden lock file
