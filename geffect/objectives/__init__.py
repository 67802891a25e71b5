"""geffect.objectives (work in progress)."""
