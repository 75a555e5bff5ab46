"""Write a tiny random bundle (real file formats, toy sizes) for tests and demos.

Usage: python scripts/make_tiny_bundle.py OUT [--arch salmonn|qwen2_audio|audio_flamingo3]
       salmonn (default): [--n-layers 2] [--n-heads 4] [--hidden-size 64] [--chunk-seconds 4] [--with-beats]
                          [--seed 0]  (the same command is installed as ``ahamask-tiny-bundle``)
       qwen2_audio / audio_flamingo3: [--variant instruct|base] (Qwen2-Audio only) [--seed 0]
"""

import argparse
import sys


def _hf_bundle(arch: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"make_tiny_bundle.py --arch {arch}")
    parser.add_argument("out", help="destination folder (created; existing files are overwritten)")
    parser.add_argument("--seed", type=int, default=0)
    if arch == "qwen2_audio":
        parser.add_argument("--variant", choices=["instruct", "base"], default="instruct")
    args = parser.parse_args(argv)
    from ahamask.models import tiny_hf_audio

    if arch == "qwen2_audio":
        out = tiny_hf_audio.make_tiny_qwen2_audio_bundle(args.out, variant=args.variant, seed=args.seed)
    else:
        out = tiny_hf_audio.make_tiny_audio_flamingo3_bundle(args.out, seed=args.seed)
    print(
        f"tiny {arch} bundle written to {out} (configs: {out / 'config.yaml'}, {out / 'decode_config.yaml'})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--arch", choices=["salmonn", "qwen2_audio", "audio_flamingo3"], default="salmonn")
    known, rest = pre.parse_known_args(argv)
    if known.arch != "salmonn":
        return _hf_bundle(known.arch, rest)
    from ahamask.tools.tiny_bundle import main as salmonn_main

    return salmonn_main(rest)


if __name__ == "__main__":
    sys.exit(main())
