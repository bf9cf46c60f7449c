"""``python -m puzzle_set`` (from ``benchmarks/``): summarise the set and check it against
``frozen.json``; ``--freeze`` rewrites ``frozen.json`` (digest and split) on purpose."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from puzzle_set import PUZZLES, digest, freeze, frozen


def main(argv: list[str] | None = None) -> int:
    """Print families, counts and the digest; exit 1 when the set no longer matches."""
    parser = argparse.ArgumentParser(prog="python -m puzzle_set", description=__doc__)
    parser.add_argument("--freeze", action="store_true", help="rewrite frozen.json")
    args = parser.parse_args(argv)
    if args.freeze:
        data = freeze()
        print(f"froze {data['count']} puzzles: sha256 {data['sha256']}")
    data = frozen()
    halves = dict.fromkeys(data["dev"], "dev") | dict.fromkeys(data["test"], "test")
    counts = Counter(p.family for p in PUZZLES)
    print(f"{len(PUZZLES)} puzzles, {sum(len(p.marked) for p in PUZZLES)} sentences")
    for family, n in sorted(counts.items()):
        dev = sum(1 for p in PUZZLES if p.family == family and halves.get(p.id) == "dev")
        print(f"  {family:14s} {n:2d}  (dev {dev}, test {n - dev})")
    now = digest()
    print(f"recorded sha256 {data['sha256']}\ncurrent  sha256 {now}")
    if now != data["sha256"]:
        print("the puzzle set changed since it was frozen", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
