"""geffect.effects (work in progress)."""
