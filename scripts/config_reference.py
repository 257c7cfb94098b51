"""Write docs/config.md, the reference of every run setting, from the comments in configs/*.yaml.

    .venv/bin/python scripts/config_reference.py          # rewrite docs/config.md
    .venv/bin/python scripts/config_reference.py --check  # exit 1 when docs/config.md is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xdt.config_reference import DOC, markdown

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether docs/config.md is up to date")
    args = parser.parse_args()
    path, text = ROOT / DOC, markdown()
    if args.check:
        current = path.read_text() if path.is_file() else ""
        print(f"{DOC} is {'up to date' if current == text else 'stale: rerun without --check'}")
        return int(current != text)
    path.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
