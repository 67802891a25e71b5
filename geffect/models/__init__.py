"""geffect.models (work in progress)."""
