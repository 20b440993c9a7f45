"""`python -m tests.integration.images [RECIPE ...]`: build the integration tests' images, print timings."""

from __future__ import annotations

import argparse
import sys

from tests.integration.images import IMAGES, ImageBuildError, ensure_images, image_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("recipes", nargs="*", metavar="RECIPE", help=f"default: all of {', '.join(IMAGES)}")
    args = parser.parse_args(argv)
    unknown = [name for name in args.recipes if name not in IMAGES]
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(IMAGES)}")
    names = {name: IMAGES[name] for name in args.recipes} if args.recipes else None
    try:
        timings = ensure_images(names)
    except ImageBuildError as failure:
        print(f"image build failed: {failure}", file=sys.stderr)
        return 1
    width = max(len(tag) for tag in timings)
    print(f"{'image'.ljust(width)}  {'build s':>8}  {'size MB':>8}")
    for tag, seconds in timings.items():
        state = f"{seconds:8.1f}" if seconds else f"{'cached':>8}"
        print(f"{tag.ljust(width)}  {state}  {image_size(tag) / 1e6:8.0f}")
    print(f"{'total'.ljust(width)}  {sum(timings.values()):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
