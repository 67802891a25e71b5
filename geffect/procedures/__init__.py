"""Procedures built from several geffect runs.

``reveal_release`` (Xie et al. 2025, as issue #11 reads it): unlearn a concept without a forget
set — NeuralUCB-chosen instructions reveal it, stacked O-LoRA modules release it, one ordinary run
directory per iteration. Concepts (what to elicit, score and keep) are registered like objectives.
"""

from __future__ import annotations

from geffect.procedures.bandit import NeuralUCB, RandomArms, play
from geffect.procedures.concepts import Concept, get_concept, list_concepts, register_concept
from geffect.procedures.reveal_release import (
    RevealRelease,
    RevealReleaseConfig,
    release_on_true_forget,
    reveal_release,
)

__all__ = ["Concept", "NeuralUCB", "RandomArms", "RevealRelease", "RevealReleaseConfig", "get_concept",
           "list_concepts", "play", "register_concept", "release_on_true_forget", "reveal_release"]
