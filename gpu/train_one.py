"""`deepscan train` with sharded weights, for gpu/run.sh until the CLI has ``--shard-mib``.

    python3 gpu/train_one.py RECIPE -o RUN --shard-mib 15 [--set KEY=VALUE ...]

The same path as the CLI (deepscan.train.command.run_train); the final weights are written as float16 safetensors
shards of at most ``--shard-mib`` MiB with their index, which is what a lent GPU machine can send back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--shard-mib", type=float, default=15.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    from rich.console import Console

    from deepscan.errors import DeepscanError
    from deepscan.train.command import run_train

    console = Console(stderr=True, highlight=False)
    try:
        return run_train(args.recipe, args.overrides, args.output, None, False, False, args.device, console,
                         shard_mib=args.shard_mib)
    except DeepscanError as error:
        console.print(f"error: {error}", markup=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
