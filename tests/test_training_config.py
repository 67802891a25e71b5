"""UnlearnConfig: YAML round trip, derived defaults, validation messages."""

from __future__ import annotations

import pytest

from geffect.tasks.builtin import complement_split
from geffect.training.config import ConfigError, UnlearnConfig


def test_yaml_round_trip(tmp_path):
    config = UnlearnConfig(objective="npo", hparams={"beta": 0.2}, forget="forget05", lr=3e-4,
                           probes={"forget": "forget05", "facts": "world_facts"}, lora={"r": 4, "target_modules": ["q_proj"]},
                           directions=["gradient"], steps=12, views=["idk"]).resolved()
    path = config.save(tmp_path / "config.yaml")
    loaded = UnlearnConfig.load(tmp_path)  # a run directory is read at its config.yaml
    assert loaded == config
    assert path.read_text().startswith("objective: npo\n")  # field order kept
    assert list(loaded.probes) == ["forget", "facts"]


def test_resolved_fills_retain_and_default_probes():
    config = UnlearnConfig(forget="forget10").resolved()
    assert config.retain == "retain90"
    assert config.probes == {"forget": "forget10", "retain": "retain90"}
    assert UnlearnConfig(forget="forget01", retain="world_facts").resolved().probes["retain"] == "world_facts"
    assert UnlearnConfig(forget="my_split").resolved().probes == {"forget": "my_split"}
    assert complement_split("forget05") == "retain95" and complement_split("forget_x") is None


def test_total_steps_from_steps_or_epochs():
    assert UnlearnConfig().total_steps(200) == 30
    assert UnlearnConfig(steps=7).total_steps(200) == 7
    # 2 epochs of 200 examples with 8 x 2 examples per step: 25 steps
    assert UnlearnConfig(epochs=2, batch_size=8, grad_accum=2).total_steps(200) == 25


@pytest.mark.parametrize("fields, message", [
    ({"optimizer": "adam"}, "'optimizer' must be one of"),
    ({"batch_size": 0}, "'batch_size' must be a positive integer"),
    ({"steps": 3, "epochs": 1.0}, "exclusive"),
    ({"directions": ["grad"]}, "'directions' must be one of"),
    ({"record_every": -1}, "record_every"),
    ({"lora": 4}, "peft.LoraConfig"),
])
def test_validation_names_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        UnlearnConfig(**fields).resolved()


def test_unknown_field_is_an_error(tmp_path):
    (tmp_path / "config.yaml").write_text("objective: ga\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['learning_rate'\]"):
        UnlearnConfig.load(tmp_path)


def test_default_learning_rate_is_the_one_the_commands_advertise():
    """The default lr visibly unlearns tiny (tests/test_training_tiny.py checks that); the CLI help says it."""
    from geffect.cli.demo import register as register_demo
    from geffect.cli.options import RUN_FLAGS
    from geffect.training.config import DEFAULT_LR

    assert UnlearnConfig().lr == DEFAULT_LR == 5e-4
    assert "default 5e-4" in RUN_FLAGS["--lr"][2]
    import argparse

    parser = argparse.ArgumentParser()
    register_demo(parser.add_subparsers())
    demo = parser.parse_args(["demo"])
    assert demo.lr is None  # the demo uses the trainer's default rather than its own number
