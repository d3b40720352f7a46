"""``xcorrflow synth``: write a synthetic deployment (hourly MiniSEED + truth.json) for tests and demos."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from contracts.errors import ConfigError
from xcorrflow.cliutil import env_flag


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command."""
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic station array with known lags (or a known velocity change)",
        description="--field plane (default): a plane wave of band-limited noise crosses N stations; every pair's "
        "lag is a whole number of 20 Hz samples. --field diffuse: noise sources around and inside the array and "
        "point scatterers (coda) in a medium whose velocity follows the --dvv-* schedule; truth.json gives each "
        "pair's distance and each window's true dv/v. Writes one MiniSEED file per station and hour, "
        "stations.csv, truth.json.",
    )
    p.add_argument("out", type=Path, help="output folder")
    env_flag(p, "--stations", "XCORRFLOW_SYNTH_STATIONS", 8, "number of stations", int)
    env_flag(p, "--hours", "XCORRFLOW_SYNTH_HOURS", 1, "hours of data", int)
    env_flag(p, "--rates", "XCORRFLOW_SYNTH_RATES", "100", "rates in Hz, comma-separated, given round-robin")
    env_flag(p, "--seed", "XCORRFLOW_SYNTH_SEED", 0, "random seed: same seed, same files", int)
    p.add_argument(
        "--gap",
        action="append",
        default=[],
        metavar="STATION:START:LEN",
        help="remove LEN s of STATION (code like S003, or index) from START s; repeatable",
    )
    env_flag(p, "--local-noise", "XCORRFLOW_SYNTH_LOCAL_NOISE", 0.5, "local noise std / field std", float)
    env_flag(
        p, "--field", "XCORRFLOW_SYNTH_FIELD", "plane", "wave field: plane or diffuse", choices=["plane", "diffuse"]
    )
    changes = {
        "step": ("HOUR:PERCENT", "dv/v changes by PERCENT from HOUR on"),
        "ramp": ("START:END:PERCENT", "dv/v changes linearly by PERCENT from hour START to END, then holds"),
        "recovery": ("HOUR:PERCENT:TAU", "dv/v changes by PERCENT at HOUR, then relaxes as exp(-t/TAU hours)"),
    }
    for kind, (metavar, text) in changes.items():
        p.add_argument(
            f"--dvv-{kind}",
            action="append",
            default=[],
            metavar=metavar,
            help=f"{text} (diffuse field; percent, + = faster; terms add up; repeatable)",
        )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Synthesise the deployment described by the parsed arguments."""
    from dsp.synthetic.diffuse import DvvChange
    from dsp.synthetic.stations import GapSpec, SynthConfig, synthesise

    try:
        rates = tuple(int(r) for r in str(args.rates).split(",") if r.strip())
    except ValueError as exc:
        raise ConfigError(f"--rates {args.rates!r}: expected integers in Hz, e.g. 50,100") from exc
    cfg = SynthConfig(
        stations=args.stations,
        hours=args.hours,
        rates=rates,
        seed=args.seed,
        gaps=tuple(GapSpec.parse(g) for g in args.gap),
        local_noise=args.local_noise,
        wavefield=args.field,
        dvv=tuple(
            DvvChange.parse(kind, text)
            for kind in ("step", "ramp", "recovery")
            for text in getattr(args, f"dvv_{kind}")
        ),
    )
    t0 = time.perf_counter()
    truth = synthesise(cfg, args.out)
    n_files = sum(1 for _ in args.out.glob("*.mseed"))
    print(
        f"synth: {cfg.stations} stations, {cfg.hours} h, {n_files} files, {len(truth['pairs'])} pairs "
        f"-> {args.out} in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0
