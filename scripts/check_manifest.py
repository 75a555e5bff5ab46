"""Check SALMONN manifests before a run: print every bad entry, exit 1 if there is any.

Usage: python scripts/check_manifest.py MANIFEST [MANIFEST ...] [--no-audio | --quick]

By default every audio file is decoded completely. ``--quick`` only opens each file's header, the check
train.py and evaluate.py run before loading the model (missing, empty, non-audio and cut-off WAV files).
"""

import argparse
import sys

from ahamask.data.manifest import validate_manifest


def main(argv: list[str] | None = None) -> int:
    """Validate each manifest given on the command line; return the process exit code."""
    parser = argparse.ArgumentParser(description="Report every bad entry of SALMONN manifests.")
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST", help="JSON manifest(s) to check")
    parser.add_argument(
        "--no-audio", action="store_true", help="check the JSON schema only, skip decoding audio"
    )
    parser.add_argument(
        "--quick", action="store_true", help="open each audio file's header instead of decoding it"
    )
    args = parser.parse_args(argv)
    failed = False
    for manifest in args.manifests:
        issues = validate_manifest(manifest, check_audio=not args.no_audio, quick=args.quick)
        for issue in issues:
            print(issue)
        print(f"{manifest}: {len(issues)} bad entries" if issues else f"{manifest}: ok")
        failed = failed or bool(issues)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
