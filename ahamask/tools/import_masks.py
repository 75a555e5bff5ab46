"""Copy the ten released AHAMask masks into ``legacy_checkpoints/``, checking each one's SHA-256.

Usage:
    python scripts/import_released_masks.py SRC [--dest legacy_checkpoints]

SRC is a local copy of the release: any folder laid out as ``<name>/checkpoint.pth`` (the official
repository's ``legacy_checkpoints/``). Each of the ten files is read once, hashed, and written only if the
digest is the released one (``legacy_checkpoints/SHA256SUMS``), through a temporary file and a rename, so
DEST never holds a partial or an unverified mask. One line is printed per file: ``ok``, ``present``,
``replaced``, ``missing``, ``altered`` or ``extra``. The MIT licence of the release travels with the masks:
a ``LICENSE*`` file with the MIT text in SRC or the folder above it is copied to
``DEST/LICENSE-AHAMask-MIT.txt``.

Exit code: 0 when nothing was altered (missing masks are reported, not fatal), 1 when a file's digest
differs from the release or SRC is not a folder, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..masking.released import RELEASED_MASKS, ReleasedMask
from ._common import ToolError, fail

__all__ = ["LICENCE_NAME", "ImportReport", "build_parser", "import_release", "main"]

PROG = "import_released_masks"
LICENCE_NAME = "LICENSE-AHAMask-MIT.txt"
# Files of a release copy that are documentation, not masks: neither copied as masks nor "extra".
_DOC_PREFIXES = ("LICENSE", "LICENCE", "README", "SHA256SUMS")


@dataclass
class ImportReport:
    """What an import did, one list of ``legacy_checkpoints/``-relative paths per outcome."""

    copied: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    licence: Path | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when any file was altered, else 0."""
        return 1 if self.altered else 0


def build_parser() -> argparse.ArgumentParser:
    """The command line (nothing heavy is imported to build it)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", type=Path, help="a folder laid out as <name>/checkpoint.pth")
    parser.add_argument(
        "--dest",
        type=Path,
        default=Path("legacy_checkpoints"),
        help="destination (default: ./legacy_checkpoints)",
    )
    return parser


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _find_licence(src: Path) -> Path | None:
    """The release's MIT licence in SRC or the folder above it (the official repository keeps it there)."""
    for folder in (src, src.parent):
        for candidate in sorted(folder.glob("LICEN[CS]E*")):
            if not candidate.is_file():
                continue
            try:
                text = candidate.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            # Only an MIT text: the folder above a download may hold some unrelated project's licence.
            if "MIT License" in text or "Permission is hereby granted, free of charge" in text:
                return candidate
    return None


def _is_documentation(relative: Path) -> bool:
    return len(relative.parts) == 1 and relative.name.upper().startswith(_DOC_PREFIXES)


def _import_one(mask: ReleasedMask, src: Path, dest: Path, report: ImportReport) -> None:
    """Verifies one released mask in ``src`` against its SHA-256 and copies it (atomically) unless the
    same bytes are already in ``dest``; records the outcome and its line in ``report``."""
    from ..utils.io import atomic_open

    source, target = src / mask.relpath, dest / mask.relpath
    if not source.is_file():
        report.missing.append(mask.relpath)
        report.lines.append(f"missing   {mask.relpath}: not in {src}")
        return
    data = source.read_bytes()
    digest = _sha256(data)
    if digest != mask.sha256:
        report.altered.append(mask.relpath)
        report.lines.append(
            f"altered   {mask.relpath}: sha256 {digest[:16]}... is not the release's {mask.sha256[:16]}...; not copied"
        )
        return
    if target.is_file():
        old = _sha256(target.read_bytes())
        if old == digest:
            report.present.append(mask.relpath)
            report.lines.append(f"present   {mask.relpath}: already in {dest}, sha256 verified")
            return
    replacing = target.exists()
    # The bytes written are the bytes hashed: no second read that could differ.
    with atomic_open(target, "wb") as handle:
        handle.write(data)
    if replacing:
        report.replaced.append(mask.relpath)
        report.lines.append(f"replaced  {mask.relpath}: the copy in {dest} differed from the release")
    else:
        report.copied.append(mask.relpath)
        report.lines.append(f"ok        {mask.relpath}: sha256 verified, copied")


def _report_extra_files(src: Path, report: ImportReport) -> None:
    """Lists (without copying) the files in ``src`` that are neither a released mask nor documentation."""
    expected = {Path(m.relpath) for m in RELEASED_MASKS.values()}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        relative = path.relative_to(src)
        if relative not in expected and not _is_documentation(relative):
            report.extra.append(relative.as_posix())
            report.lines.append(f"extra     {relative.as_posix()}: not part of the release; not copied")


def _copy_licence(src: Path, dest: Path, report: ImportReport) -> None:
    """Copies the release's MIT licence beside the masks, or says where none was found (the notice must
    travel with the masks)."""
    from ..utils.io import atomic_open

    licence = _find_licence(src)
    if licence is not None:
        with atomic_open(dest / LICENCE_NAME, "wb") as handle:
            handle.write(licence.read_bytes())
        report.licence = dest / LICENCE_NAME
        report.lines.append(f"licence   {licence} -> {report.licence}")
    else:
        report.lines.append(
            f"licence   none found in {src} or its parent: the masks are MIT-licensed (Copyright (c) 2025 "
            "Yiwei Guo); keep that notice with any copy you pass on"
        )


def import_release(src: str | Path, dest: str | Path) -> ImportReport:
    """Copy the verified released masks from ``src`` into ``dest``.

    Args:
        src: a folder laid out as ``<name>/checkpoint.pth``.
        dest: the ``legacy_checkpoints/`` folder to fill (created).

    Returns:
        The report; ``report.lines`` holds the printed lines, one per file and a summary.

    Raises:
        ToolError: ``src`` is not a folder.

    Example:
        >>> import_release("../shared/reference/legacy_checkpoints", "legacy_checkpoints").exit_code  # doctest: +SKIP
        0
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise ToolError(f"{src}: no such folder (expected a copy of the release: <name>/checkpoint.pth)")
    report = ImportReport()
    for mask in RELEASED_MASKS.values():
        _import_one(mask, src, dest, report)
    _report_extra_files(src, report)
    _copy_licence(src, dest, report)
    usable = len(report.copied) + len(report.present) + len(report.replaced)
    report.lines.append(
        f"{usable} of {len(RELEASED_MASKS)} released masks in {dest}; {len(report.missing)} missing, "
        f"{len(report.altered)} altered, {len(report.extra)} extra files"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the import; returns the exit code (0, 1 for an altered file or a bad SRC, 2 for usage errors)."""
    args = build_parser().parse_args(argv)
    try:
        report = import_release(args.src, args.dest)
    except (ToolError, OSError) as exc:
        return fail(PROG, exc)
    for line in report.lines:
        print(line)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
