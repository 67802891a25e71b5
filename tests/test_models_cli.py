"""The ``geffect build-world`` and ``geffect demo`` sub-commands."""

from __future__ import annotations

import json
from pathlib import Path

from geffect.cli import main
from geffect.data import read_manifest


def test_build_world_only_writes_the_default_world(tmp_path: Path, capsys) -> None:
    assert main(["build-world", "--world-only", "--world-dir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["content_hash"] == read_manifest(tmp_path)["content_hash"] == read_manifest()["content_hash"]
    assert printed["sizes"]["full"] == 2000


def test_build_world_rejects_unknown_models(capsys) -> None:
    assert main(["build-world", "--models", "tiny,huge"]) == 2
    assert "unknown model(s) huge" in capsys.readouterr().err


def test_demo_runs_a_study_and_writes_the_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--objectives", "ga,npo", "--steps", "2",
                 "--eval-examples", "4"]) == 0
    printed = capsys.readouterr().out
    page = out / "report.html"
    assert page.is_file() and str(page.resolve()) in printed
    assert printed.count("forget ROUGE-L") == 2
    html = page.read_text()
    assert "npo" in html and "ga" in html and "data:image/png;base64" in html
    assert (out / "runs" / "ga" / "config.yaml").is_file()


def test_demo_rejects_unknown_objectives(capsys) -> None:
    assert main(["demo", "--objectives", "ga,nope"]) == 2
    assert "unknown objective(s) nope" in capsys.readouterr().err


def test_demo_reports_a_missing_model(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("GEFFECT_DATA", str(tmp_path))
    assert main(["demo", "--out", str(tmp_path / "out"), "--steps", "1", "--eval-examples", "0"]) == 2
    assert "build-world" in capsys.readouterr().err
