"""``geffect unlearn``: run an unlearning objective with live G-effect recording into a run directory."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from geffect.cli import UserError

# CLI flag -> UnlearnConfig field, for the common settings (anything else: --set FIELD=VALUE)
_FLAGS: dict[str, tuple[str, type, str]] = {
    "--retain": ("retain", str, "retain split (default: the complement of --forget, e.g. retain90)"),
    "--data": ("data", str, "TOFU directory or hub id instead of the embedded world"),
    "--epochs": ("epochs", float, "passes over the forget split (instead of --steps)"),
    "--lr": ("lr", float, "learning rate (default 1e-4)"),
    "--optimizer": ("optimizer", str, "adamw or sgd"),
    "--schedule": ("schedule", str, "constant, linear or cosine"),
    "--batch-size": ("batch_size", int, "forget examples per micro-batch (default 8)"),
    "--grad-accum": ("grad_accum", int, "micro-batches per optimiser step (default 1)"),
    "--seed": ("seed", int, "seed of data order, probes and views (default 0)"),
    "--record-every": ("record_every", int, "record G-effects every k steps (default 1, 0 = never)"),
    "--probe-size": ("probe_size", int, "instances per probe set (default 32)"),
    "--checkpoint-every": ("checkpoint_every", int, "steps between checkpoints (default 50)"),
    "--device": ("device", str, "torch device (default: CUDA when available, else CPU)"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "unlearn",
        help="unlearn a forget split with an objective, recording G-effects",
        description="Run an unlearning objective from a target model on a forget split. Every k steps the "
                    "G-effect of the objective gradient and of the applied update is recorded per layer and "
                    "probe instance into DIR (config.yaml, effects/history/risks.parquet, run.json, "
                    "checkpoints). A killed run continues with --resume.",
    )
    parser.add_argument("--objective", help="registered objective name (see `geffect objectives`) or "
                                            "package.module:function")
    parser.add_argument("--model", help="shipped model name (tiny, ...) or a Hugging Face model directory")
    parser.add_argument("--forget", help="forget split (default forget10)")
    parser.add_argument("--steps", type=int, help="optimiser steps (default 30)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default runs/<objective>-<forget>-<time>)")
    for flag, (field, kind, text) in _FLAGS.items():
        parser.add_argument(flag, dest=field, type=kind, help=text)
    parser.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE",
                        help="objective hyper-parameter, e.g. --hparam beta=0.2 (repeatable)")
    parser.add_argument("--probe", action="append", default=[], metavar="NAME=SPLIT",
                        help="probe set to record (repeatable; default forget and retain)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="fields",
                        help="any other UnlearnConfig field as YAML, e.g. --set lora='{r: 8}' (repeatable)")
    parser.add_argument("--config", metavar="FILE", help="a config.yaml to start from (flags override it)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def _pairs(items: list[str], what: str) -> dict[str, Any]:
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


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line."""
    fields = _pairs(args.fields, "--set")
    for field, *_ in _FLAGS.values():
        if getattr(args, field) is not None:
            fields[field] = getattr(args, field)
    for name in ("model", "forget", "steps"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.hparam:
        fields["hparams"] = {**fields.get("hparams", {}), **_pairs(args.hparam, "--hparam")}
    if args.probe:
        fields["probes"] = {k: str(v) for k, v in _pairs(args.probe, "--probe").items()}
    return fields


def run(args: argparse.Namespace) -> int:
    from geffect.training import ConfigError, UnlearnConfig, unlearn

    try:
        config = UnlearnConfig.load(args.config) if args.config else None
        if config is None and args.objective is None and not args.resume:
            raise UserError("--objective is required (see `geffect objectives` for the names)")
        run = unlearn(args.objective, out=args.out, config=config, resume=args.resume,
                      progress=not args.no_progress, **settings(args))
    except (ConfigError, FileNotFoundError) as err:
        raise UserError(str(err).splitlines()[0]) from None
    history = run.history
    print(f"run: {run.path}  status: {run.status}  steps: {run.info.get('step')}  "
          f"seconds: {run.info.get('seconds', 0):.1f}")
    if not history.empty:
        last = history.iloc[-1]
        risks = "  ".join(f"{c}={last[c]:.4g}" for c in history.columns if c.startswith("risk_") and
                          not c.startswith("risk_change") and history[c].notna().any())
        print(f"final loss: {last['loss']:.4g}  {risks}")
    if run.status == "diverged":
        print(f"stopped: {run.info.get('message')}", file=sys.stderr)
        return 3
    return 0
