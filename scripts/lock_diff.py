"""Print the installed packages whose version differs from the lock (used by `make test-latest`).

Usage: python scripts/lock_diff.py requirements.lock
"""

import re
import sys
from importlib import metadata


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock_path: str) -> int:
    locked = {}
    for line in open(lock_path, encoding="utf-8"):
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        if match:
            locked[_norm(match.group(1))] = match.group(2)
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    changed = [
        f"{name}: locked {version}, installed {installed[name]}"
        for name, version in sorted(locked.items())
        if name in installed and installed[name] != version
    ]
    new = sorted(set(installed) - set(locked) - {"ahamask", "pip"})
    print(f"newest allowed versions: {len(changed)} differ from {lock_path}" + (":" if changed else ""))
    for line in changed:
        print("  " + line)
    if new:
        print("  not in the lock: " + ", ".join(new))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
