"""``geffect objectives``: the listing names every objective with its formula; NAME describes one."""

from __future__ import annotations

from geffect.cli import main
from geffect.objectives import get_objective, list_objectives


def test_lists_every_objective_with_its_formula(capsys):
    assert main(["objectives"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(list_objectives())
    for line, name in zip(lines, list_objectives()):
        assert line.split()[0] == name and line.endswith(get_objective(name).formula)


def test_describes_one_objective(capsys):
    assert main(["objectives", "wga"]) == 0
    out = capsys.readouterr().out
    assert "alpha=1.0" in out and "Wang et al. 2025" in out and get_objective("wga").formula in out


def test_unknown_objective_is_one_line_error(capsys):
    assert main(["objectives", "gradient-ascent"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown objective 'gradient-ascent'" in err and "npo" in err
