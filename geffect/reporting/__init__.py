"""geffect.reporting (work in progress)."""
