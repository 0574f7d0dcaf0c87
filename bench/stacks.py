"""Summarise a py-spy raw (collapsed) profile: where the samples go, by frame.

    .venv/bin/python bench/stacks.py PROFILE.txt [--top 40] [--grep TEXT]

Prints the share of samples in which each frame appears (inclusive) and the share of samples
each frame is the leaf of (self). Not run by CI."""
from __future__ import annotations

import argparse
from collections import Counter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--grep", default=None, help="only stacks containing this text")
    args = parser.parse_args()
    inclusive, leaf, total = Counter(), Counter(), 0
    for line in open(args.path):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit() or (args.grep and args.grep not in stack):
            continue   # (a last line cut short when py-spy was stopped has no count)
        count = int(count)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        leaf[frames[-1]] += count
    print(f"{total} samples")
    print("-- inclusive --")
    for frame, count in inclusive.most_common(args.top):
        print(f"{100 * count / total:6.1f}%  {frame}")
    print("-- self --")
    for frame, count in leaf.most_common(args.top // 2):
        print(f"{100 * count / total:6.1f}%  {frame}")


if __name__ == "__main__":
    main()
