"""geffect.data (work in progress)."""
