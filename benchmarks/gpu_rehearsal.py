"""Rehearse the GPU check's device command here, with the device machine's packages, not ours (#31).

    python benchmarks/gpu_rehearsal.py [--venv /tmp/ngt-rehearsal] [--keep]

The H200 lent to this project has its own image (the device tool's KINDS.md lists every package;
benchmarks/device_packages.txt is that list, as read on 2026-11-17) and no package registry, so
whatever this project needs beyond that list must be carried as wheels in `.whl/`, with the
`pip download` command in docs/distributed.md ("The GPU check"). A wheel missing from that command
fails on the GPU, in device time. This script makes it fail here instead:

1. walks neurogen-tui's runtime requirements (its installed metadata, recursively, no extras; a
   package on the image brings its own requirements there, so the walk stops at it) and sorts
   each distribution into: on the image, in the docs' wheel list, or **neither** (a failure to fix
   in the docs before any device call);
2. makes a fresh venv holding only the image's share of them (at the versions installed here,
   from the registry), downloads the docs' wheel list (for this Python; the device's is 3.12) into
   a fresh `.whl/`, and runs the device command as written: the wheels installed with
   `--no-index --no-deps --target`, then `benchmarks/gpu_check.py --dry-run`.

It exits 0 when the dry run passes in that venv, 1 otherwise, 2 when a requirement is nowhere.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
IMAGE = Path(__file__).with_name("device_packages.txt")
DOCS = ROOT / "docs" / "distributed.md"


CHECK_NEEDS = ("pytest", "pytest-timeout", "pytest-xdist")  # the check's own (its `pytest -m gpu`): on the image


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    return {norm(w) for line in IMAGE.read_text().splitlines() if not line.startswith("#") for w in line.split()}


def wheel_list() -> list[str]:
    """The `name==version` pins of docs/distributed.md's `pip download ... -d .whl` command."""
    text = DOCS.read_text()
    start = text.index("pip download")
    command = text[start:text.index("\n    #", start)].replace("\\\n", " ")
    return [w for w in shlex.split(command) if "==" in w and not w.startswith("-")]


def closure(image: set[str], root: str = "neurogen-tui") -> dict[str, str]:
    """Every distribution neurogen-tui needs at run time (no extras), with the version installed
    here; a package on the image brings its own requirements there, so the walk stops at it."""
    out: dict[str, str] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if norm(name) in out:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            out[norm(name)] = "?"
            continue
        out[norm(name)] = dist.version
        if norm(name) in image and name != root:
            continue
        for spec in dist.requires or ():
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    out.pop(norm(root), None)
    return out


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(shlex.quote(c) for c in command), flush=True)
    return subprocess.run(command, **kwargs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", default=None, help="where to make the fresh venv (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="leave the venv and .whl behind")
    p.add_argument("--plan-only", action="store_true", help="only sort the requirements (no venv, no network)")
    args = p.parse_args(argv)
    image, pins = image_packages(), wheel_list()
    carried = {norm(pin.split("==")[0]): pin for pin in pins}
    needed = closure(image)
    plan = {"image": [], "wheel": [], "nowhere": []}
    for name, version in sorted(needed.items()):
        where = "wheel" if name in carried else "image" if name in image else "nowhere"
        plan[where].append(f"{name}=={version}")
    print(f"neurogen-tui needs {len(needed)} distributions at run time: {len(plan['image'])} on the device image, "
          f"{len(plan['wheel'])} carried as wheels, {len(plan['nowhere'])} nowhere")
    for pin in plan["nowhere"]:
        print(f"  MISSING: {pin} is neither on the device image nor in docs/distributed.md's wheel list")
    if plan["nowhere"]:
        return 2
    if args.plan_only:
        return 0
    work = Path(args.venv or tempfile.mkdtemp(prefix="ngt-rehearsal-"))
    venv, wheels, site, out = work / "venv", work / ".whl", work / "site", work / "out"
    try:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        # the image's share, from the registry at our versions with what they need (the image is
        # whole; torch: the pinned CPU build of these machines)
        run([python, "-m", "pip", "install", "-q", *plan["image"], *CHECK_NEEDS], check=True)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        got = run([python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                   version, "-d", str(wheels), *pins])
        if got.returncode:
            print("the wheel list cannot be downloaded as docs/distributed.md writes it")
            return 1
        # the device command as docs/distributed.md writes it: the wheels into a target, then the check
        run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
             "--upgrade", "--target", str(site), *map(str, sorted(wheels.glob("*.whl")))], check=True)
        env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": f"{site}:{ROOT}", "HOME": str(work),
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        done = run([python, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out)], cwd=ROOT, env=env,
                   capture_output=True, text=True)
        print(done.stdout[-6000:], done.stderr[-3000:], sep="\n")
        problems = [f"exit {done.returncode}"] if done.returncode else []
        problems += ["a traceback in its output" for text in (done.stdout, done.stderr) if "Traceback" in text][:1]
        try:
            results = json.loads((out / "results.json").read_text())
        except (OSError, ValueError):
            results = {}
        tests = results.get("tests") or {}
        if tests.get("exit") not in (0, None):
            problems.append(f"`pytest -m gpu` exit {tests.get('exit')}")
        print(f"\nthe device command's dry run in a venv of the image's packages and the carried wheels: "
              f"{'PASSED' if not problems else 'FAILED (' + '; '.join(problems) + ')'}")
        return 0 if not problems else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
