"""A screenshot of TensorBoard's scalars page for a small sweep logged with ``logger=tensorboard``.

Runs the sweep (``debug=smoke``: the tiny model, seconds per job; ERM and DANN, two seeds) unless ``--sweep`` names
one that exists, serves it with ``tensorboard --logdir <sweep>`` on 127.0.0.1, photographs the page with headless
Chromium, and stops both. Every step is bounded in time (``--timeout``); nothing leaves this machine.

    python scripts/tensorboard_screenshot.py --out docs/images/tensorboard_scalars.png
    python scripts/tensorboard_screenshot.py --sweep runs/grid --page timeseries --out grid.png

Needs the tensorboard extra (``pip install -e ".[tensorboard]"``) and a Chromium (Debian: ``apt-get install
chromium``; ``--chromium`` names another binary).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SWEEP = ["debug=smoke", "logger=tensorboard", "strategy=erm,dann", "seed=0,1", "max_steps=40", "eval_interval=10",
         "log_interval=5"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, deadline: float) -> None:
    """Return once ``url`` answers; exit with a message at ``deadline``."""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"tensorboard_screenshot.py: {url} did not answer in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--sweep", type=Path, default=None, help="a sweep logged with logger=tensorboard "
                        "(default: run a small one in a temporary folder)")
    parser.add_argument("--page", default="scalars&tagFilter=eval/target/.*/accuracy",
                        help="TensorBoard's page and its tag filter (default: %(default)s)")
    parser.add_argument("--size", default="1600,1100", help="the window, width,height in pixels")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for serving and photographing")
    args = parser.parse_args()
    if not args.chromium:
        sys.exit("tensorboard_screenshot.py: no Chromium found; install one (Debian: apt-get install chromium) "
                 "or pass --chromium")
    with tempfile.TemporaryDirectory() as tmp:
        sweep = args.sweep or Path(tmp) / "sweep"
        if args.sweep is None:
            xdt = str(Path(sys.executable).with_name("xdt"))
            subprocess.run([xdt, "train", "-m", *SWEEP, f"hydra.sweep.dir={sweep}", f"cache_dir={tmp}/cache"],
                           check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        board = subprocess.Popen([str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(sweep),
                                  "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + args.timeout
            wait_for(f"http://127.0.0.1:{port}/", deadline)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            # virtual-time-budget lets the page's scripts load the runs and draw the charts before the shot.
            subprocess.run([args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--window-size={args.size}", "--virtual-time-budget=20000",
                            f"--user-data-dir={tmp}/chromium", f"--screenshot={args.out.resolve()}",
                            f"http://127.0.0.1:{port}/#{args.page}"],
                           check=True, timeout=max(deadline - time.monotonic(), 1), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        finally:
            board.terminate()
            board.wait(timeout=10)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
