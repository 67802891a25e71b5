"""geffect.training (work in progress)."""
