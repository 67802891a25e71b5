"""Reporting: geffect's plots (``geffect.plot``), automatic diagnosis sentences and the HTML
report (``geffect.report``) of unlearning runs, all computed from the trainer's record tables."""

from geffect.reporting.diagnosis import Finding, findings
from geffect.reporting.new_objective import diagnose as diagnose
from geffect.reporting.report import report
from geffect.reporting.runs import RunData, as_run, as_runs

__all__ = ["Finding", "RunData", "as_run", "as_runs", "diagnose", "findings", "report"]
