"""The dependency lock: write it from a tested environment, or check an environment against it.

`requirements.lock` pins every distribution the project installs (runtime and dev) at the
versions the suite passed with; `make setup` installs through it as a pip constraints file.
pip rather than uv: the CPU build of torch lies on this machine's disk where only pip looks,
and uv would fetch a multi-GB CUDA build instead.

    python .ci/lock.py write requirements.lock   # after `make upgrade` passed
    python .ci/lock.py check requirements.lock   # exit 1 when the environment drifted
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

# Installed by pip/venv themselves, or the project under development.
IGNORED = {"pip", "setuptools", "wheel", "evoinstruct"}
# Come with a CUDA build of torch on a GPU machine; a CPU lock cannot name them.
GPU_ONLY = re.compile(r"^(nvidia-.*|triton|cuda-.*)$")

HEADER = """\
# Every distribution `make setup` installs, at the versions the suite passed with.
# Written by `make upgrade` (python .ci/lock.py write); checked by `make setup`.
# torch is the CPU build 2.13.0 (the local version label is dropped so a GPU
# machine can satisfy the same pin with its own build of 2.13.0).
"""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in distributions():
        name = normalize(dist.metadata["Name"] or "")
        if name and name not in IGNORED:
            found[name] = dist.version.split("+", 1)[0]
    return found


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise SystemExit(f"{path}:{number}: expected NAME==VERSION, got {raw!r}")
        pins[normalize(name.strip())] = version.strip()
    return pins


def write(path: Path) -> int:
    lines = [f"{name}=={version}" for name, version in sorted(installed().items())]
    path.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"{path}: {len(lines)} pins")
    return 0


def check(path: Path) -> int:
    pins = read_lock(path)
    have = installed()
    problems = [
        f"{name}: installed {have[name]}, locked {version}"
        for name, version in sorted(pins.items())
        if name in have and have[name] != version
    ]
    problems += [
        f"{name}: locked {pins[name]}, not installed" for name in sorted(pins.keys() - have.keys())
    ]
    problems += [
        f"{name}: installed {have[name]}, not in the lock (run `make upgrade`)"
        for name in sorted(have.keys() - pins.keys())
        if not GPU_ONLY.match(name)
    ]
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{path}: environment matches all {len(pins)} pins")
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"write", "check"}:
        print("usage: lock.py write|check LOCKFILE", file=sys.stderr)
        return 2
    path = Path(argv[1])
    return write(path) if argv[0] == "write" else check(path)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
