"""geffect.evaluation (work in progress)."""
