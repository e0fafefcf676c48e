"""What a call of the lent GPU machine would send, against its 64 MiB limit: run HERE, before spending device time.

The device tool sends the working tree: tracked files, untracked files that git does not ignore, and the ignored
paths named in ``carry``. This adds them up the same way, each file rounded up to a 4 KiB block: the tool's count
is above the files' own sizes (measured 2026-11-27: 63.2 MiB of files, 72 MiB in blocks, most of it 4,859 small
JPEGs, was refused; 50.7 MiB, 59 MiB in blocks, went). A link counts as a link.

    python3 gpu/travel_size.py --carry local/gpu-bundle local/gpu-wheels   # exit 1 when over the limit
    python3 gpu/travel_size.py --carry local/gpu-wheels --headroom           # MiB left for one more carried path
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

LIMIT = 64 * 1024 * 1024
MIB = 1024 * 1024
BLOCK = 4096


def git_files(root: Path, *options: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z", *options], cwd=root, check=True, capture_output=True).stdout
    return [root / name for name in listed.decode("utf-8", "surrogateescape").split("\0") if name]


def size_of(paths) -> int:
    total = 0
    for path in paths:
        try:
            total += -(-os.lstat(path).st_size // BLOCK) * BLOCK
        except FileNotFoundError:
            pass  # a tracked file deleted from the working tree sends nothing
    return total


def carried_files(path: Path) -> list[Path]:
    if path.is_symlink() or path.is_file():
        return [path]
    return [Path(folder) / name for folder, _, names in os.walk(path) for name in names]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--carry", nargs="*", default=[], type=Path, help="paths the call will name in carry")
    parser.add_argument("--headroom", action="store_true", help="print only the MiB left under the limit")
    args = parser.parse_args()
    root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True, capture_output=True,
                               text=True).stdout.strip())
    parts = {
        "tracked files": size_of(git_files(root)),
        "untracked, not ignored": size_of(git_files(root, "--others", "--exclude-standard")),
    }
    if (root / "shared").is_dir():
        parts["shared/"] = size_of(carried_files(root / "shared"))
    for path in args.carry:
        full = root / path
        if not full.exists():
            print(f"error: carry path {path} does not exist", file=sys.stderr)
            return 2
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=root).returncode == 0
        if not ignored:
            print(f"warning: {path} is not ignored by git: it travels anyway, and carry need not name it",
                  file=sys.stderr)
            continue
        parts[f"carry {path}"] = size_of(carried_files(full))
    total = sum(parts.values())
    if args.headroom:
        print(f"{(LIMIT - total) / MIB:.2f}")
        return 0 if total <= LIMIT else 1
    for name, size in parts.items():
        print(f"{size / MIB:8.2f} MiB  {name}")
    print(f"{total / MIB:8.2f} MiB  in all, of {LIMIT / MIB:.0f} MiB ({(LIMIT - total) / MIB:.2f} MiB left)")
    return 0 if total <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
