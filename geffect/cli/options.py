"""Run settings shared by the commands that train (``unlearn``, ``diagnose``): flags and parsing."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from geffect.cli import UserError

# CLI flag -> UnlearnConfig field, for the common settings (anything else: --set FIELD=VALUE)
RUN_FLAGS: dict[str, tuple[str, type, str]] = {  # type bool: a switch
    "--task": ("task", str, "unlearning task: a name (see `geffect tasks`; default tofu, or files for a --forget "
                      "FILE), path/to/file.py:TASK or package.module:TASK"),
    "--retain": ("retain", str, "retain split or data file (default: the task's, e.g. retain90 for forget10)"),
    "--data": ("data", str, "folder or hub id replacing the task's data (tofu: a TOFU directory)"),
    "--holdout": ("holdout", float, "fraction of forget/retain rows kept out of training for evaluation "
                                    "(default: the task's; 0.1 for files)"),
    "--epochs": ("epochs", float, "passes over the forget split (instead of --steps)"),
    "--lr": ("lr", float, "learning rate (default 5e-4, UnlearnConfig's)"),
    "--optimizer": ("optimizer", str, "adamw or sgd"),
    "--schedule": ("schedule", str, "constant, linear or cosine"),
    "--batch-size": ("batch_size", int, "forget examples per micro-batch (default 8)"),
    "--grad-accum": ("grad_accum", int, "micro-batches per optimiser step (default 1)"),
    "--seed": ("seed", int, "seed of data order, probes and views (default 0)"),
    "--record-every": ("record_every", int, "record G-effects every k steps (default 1, 0 = never)"),
    "--probe-size": ("probe_size", int, "instances per probe set (default 32)"),
    "--checkpoint-every": ("checkpoint_every", int, "steps between checkpoints (default 50)"),
    "--device": ("device", str, "torch device (default: CUDA when available, else CPU)"),
    "--max-length": ("max_length", int, "tokens per row (default: the model's context); longer rows are "
                                        "truncated at the end with one warning per split"),
    "--strict-lengths": ("strict_lengths", bool, "refuse rows longer than --max-length / the model's context "
                                                 "instead of truncating them"),
    "--measure-dtype": ("measure_dtype", str, "precision of the G-effect measurement, e.g. float32 for a bf16 model "
                                              "(default: the model's own)"),
    "--fsdp": ("fsdp", bool, "shard parameters, gradients and optimiser states across the launched processes "
                             "with FSDP2 (launch with accelerate launch / torchrun)"),
}


def add_run_options(parser: argparse.ArgumentParser, hparam_help: str, set_help: str) -> None:
    """Add the run-setting flags, ``--hparam``, ``--probe`` and ``--set`` to a sub-command."""
    for flag, (field, kind, text) in RUN_FLAGS.items():
        if kind is bool:  # a switch: given means True, absent leaves the config's value
            parser.add_argument(flag, dest=field, action="store_const", const=True, default=None, help=text)
        else:
            parser.add_argument(flag, dest=field, type=kind, help=text)
    parser.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE", help=hparam_help)
    parser.add_argument("--probe", action="append", default=[], metavar="NAME=SPLIT",
                        help="probe set to record: a split or data file (repeatable; default forget, retain and "
                             "the task's probes)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="fields", help=set_help)


def parse_pairs(items: list[str], what: str) -> dict[str, Any]:
    """Parse NAME=VALUE items (values as YAML scalars/mappings)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"{what} {item!r} is not of the form NAME=VALUE")
        try:
            out[name] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise UserError(f"{what} {item!r}: the value is not valid YAML ({err})") from None
    return out


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The UnlearnConfig fields given on the command line (``hparams`` and ``probes`` included)."""
    fields = parse_pairs(args.fields, "--set")
    for field, *_ in RUN_FLAGS.values():
        if getattr(args, field) is not None:
            fields[field] = getattr(args, field)
    for name in ("model", "forget", "steps"):
        if getattr(args, name, None) is not None:
            fields[name] = getattr(args, name)
    if args.hparam:
        fields["hparams"] = {**fields.get("hparams", {}), **parse_pairs(args.hparam, "--hparam")}
    if args.probe:
        fields["probes"] = {k: str(v) for k, v in parse_pairs(args.probe, "--probe").items()}
    return fields
