"""Choose the domain-adaptation grid's domains: the FDU-MTL product domains whose vocabularies overlap least.

Reads each domain's train and unlabeled text as ``xdt report --diagnose`` does (``xdt.report.add_domain_texts``:
the shipped ``source_domain=fdu_<name>`` config), computes the same vocabulary overlap it prints
(``xdt.diagnose.vocabulary_overlap``: Jaccard similarity of the word-type sets) for every pair, and picks the
``--size`` domains with the lowest mean pairwise Jaccard: the most different vocabularies, so every pair of the
grid is a real shift. The movie-review domains (MR, imdb) are left out: the grid is of product reviews. Writes
the matrix and the choice as Markdown (``--out``) with the command that made it.

    XDT_DATA_DIR=../shared/data python scripts/choose_domains.py --out docs/results/da_grid/domains.md
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

import xdt.config  # noqa: F401  (resolvers)
from xdt.atomic import atomic_write_text
from xdt.data.domains import load_domain
from xdt.diagnose import vocabulary_overlap

ROOT = Path(__file__).resolve().parents[1]
PRODUCTS = ("apparel", "baby", "camera_photo", "health_personal_care", "magazines", "music", "software",
            "sports_outdoors", "toys_games", "video")


def domain_text(name: str, data_dir: str) -> list[str]:
    """Train and unlabeled text of ``fdu_<name>``, loaded through its shipped config."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"source_domain=fdu_{name}", f"data_dir={data_dir}"])
    domain = load_domain(f"fdu_{name}", cfg.source_domain[f"fdu_{name}"], f"source_domain.fdu_{name}")
    return list(domain.train["text"]) + list(domain.unlabeled["text"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("XDT_DATA_DIR"), help="the folder holding fdu-mtl/")
    parser.add_argument("--size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here (default: print it)")
    args = parser.parse_args()
    if not args.data_dir:
        sys.exit("choose_domains.py: pass --data-dir or set XDT_DATA_DIR (the folder holding fdu-mtl/)")
    texts = {name: domain_text(name, args.data_dir) for name in PRODUCTS}
    jaccard = {}
    for a, b in itertools.combinations(PRODUCTS, 2):
        jaccard[(a, b)] = jaccard[(b, a)] = vocabulary_overlap(texts[a], texts[b])["vocab_jaccard"]
    ranked = sorted(itertools.combinations(PRODUCTS, args.size),
                    key=lambda group: statistics.mean(jaccard[p] for p in itertools.combinations(group, 2)))
    chosen = ranked[0]
    lines = ["# The domain-adaptation grid's domains", "",
             f"Made by `python scripts/choose_domains.py --size {args.size}` (data from `fdu-mtl/`, train and "
             "unlabeled text). Vocabulary overlap = Jaccard similarity of the two domains' word-type sets, as "
             "`xdt report --diagnose` prints it.", "",
             "| | " + " | ".join(PRODUCTS) + " |", "|---" * (len(PRODUCTS) + 1) + "|"]
    for a in PRODUCTS:
        lines.append(f"| {a} | " + " | ".join("-" if a == b else f"{jaccard[(a, b)]:.3f}" for b in PRODUCTS) + " |")
    lines += ["", f"Lowest mean pairwise overlap among the {len(ranked)} groups of {args.size}:", ""]
    for group in ranked[:5]:
        mean = statistics.mean(jaccard[p] for p in itertools.combinations(group, 2))
        lines.append(f"- {', '.join(group)}: {mean:.3f}")
    lines += ["", f"Chosen: **{', '.join(chosen)}** (the first), so every ordered pair of the grid "
              f"({args.size * (args.size - 1)} pairs) is between vocabularies that overlap as little as FDU-MTL's "
              "product domains allow."]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    print(text)


if __name__ == "__main__":
    main()
