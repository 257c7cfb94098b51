"""A seeded generator of review-like sentences with a designed domain shift; no files, no network.

Every review is binary sentiment (1 = positive). Its label is carried by up to three kinds of cue:

* **shared cues** ("highly recommend", "a total waste of money") mean the same in every domain;
* **domain cues** ("beautifully written", "the handle broke") occur in one domain only, next to
  domain-only topic words ("novel", "kettle"), so a model trained on one domain has never seen them
  in another;
* **flip words** ("unpredictable", "simple", "cold", ...) occur in every domain but with a polarity
  that depends on the domain family: an unpredictable plot is good, unpredictable steering is not.
  Media domains (books, dvd) share one polarity, product domains (kitchen, electronics) the other.

A classifier trained on one domain leans on its domain cues and flip words. Moving within a family
(books -> dvd) costs only the unseen domain cues; moving across families (books -> kitchen) also turns
every flip word against the model. Label noise caps in-domain accuracy near 97%, so a gap is a drop
from a realistic ceiling. The shift is real for pretrained models too: pretraining cannot know which
polarity a flip word has in this benchmark.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

SHARED_CUES = {
    1: ["i love it", "highly recommend it", "absolutely excellent", "works great", "best purchase this year",
        "really happy with it", "fantastic value", "wonderful overall", "five stars from me", "would buy again"],
    0: ["total waste of money", "very disappointed", "absolutely terrible", "the worst purchase ever",
        "i regret buying it", "awful overall", "do not buy this", "returned it right away", "one star from me",
        "really poor quality"],
}

FAMILY = {"books": "media", "dvd": "media", "kitchen": "products", "electronics": "products"}

# Polarity of each flip word in media domains; product domains use the opposite.
FLIP_WORDS_MEDIA = {"unpredictable": 1, "complex": 1, "dark": 1, "haunting": 1,
                    "predictable": 0, "simple": 0, "cold": 0, "plain": 0}

ITEMS = {  # what the reviewer bought: domain-only vocabulary
    "books": ["novel", "book", "paperback", "hardcover", "memoir", "thriller"],
    "dvd": ["movie", "film", "dvd", "documentary", "series", "sequel"],
    "kitchen": ["blender", "pan", "knife", "kettle", "toaster", "mixer"],
    "electronics": ["headphones", "speaker", "charger", "router", "tablet", "camera"],
}

ASPECTS = {  # what a flip word describes
    "books": ["plot", "ending", "story", "main character", "writing style", "narrator"],
    "dvd": ["plot", "ending", "story", "lead actor", "script", "villain"],
    "kitchen": ["handle", "lid", "blade", "motor", "temperature control", "switch"],
    "electronics": ["battery", "volume control", "screen", "connection", "menu", "power button"],
}

DOMAIN_CUES = {
    "books": {1: ["beautifully written", "a real page turner", "memorable characters", "thought provoking",
                  "gripping from the first page", "insightful and witty"],
              0: ["poorly edited", "shallow characters", "tedious prose", "full of typos", "clumsy dialogue",
                  "padded with filler chapters"]},
    "dvd": {1: ["stunning cinematography", "brilliant acting", "a moving performance", "sharp picture quality",
                "fun bonus features", "a clever script"],
            0: ["wooden acting", "choppy editing", "a muddy picture", "no subtitles at all", "a boring script",
                "laughable special effects"]},
    "kitchen": {1: ["sturdy build", "easy to clean", "heats evenly", "dishwasher safe", "stays sharp",
                    "a solid handle"],
                0: ["rusted after a week", "it leaks", "flimsy plastic", "cracked on day one", "stains easily",
                    "the handle broke"]},
    "electronics": {1: ["crisp sound", "long battery life", "fast charging", "easy setup", "a bright display",
                        "a reliable connection"],
                    0: ["keeps disconnecting", "the battery died", "it overheats", "dead pixels everywhere",
                        "constant static noise", "stopped working in a month"]},
}

OPENERS = ["i bought this {t} last month .", "got the {t} as a gift .", "this {t} arrived on time .",
           "my second {t} from this brand .", "picked up the {t} on sale .", "ordered the {t} for my family ."]
FILLERS = ["the {t} came in a cardboard box .", "i have had the {t} for a few weeks .", "shipping was quick .",
           "it looks like the photos .", "my friend has the same {t} ."]

DOMAINS = tuple(ITEMS)


@dataclass(frozen=True)
class CueRates:
    """How often each kind of cue appears in a review (the knobs of the designed shift)."""

    shared: float = 0.7
    domain: float = 0.7
    flip: float = 0.3
    distractor: float = 0.15
    label_noise: float = 0.03


def flip_polarity(word: str, domain: str) -> int:
    """Polarity of a flip word in ``domain``: as listed for media, inverted for products."""
    media_polarity = FLIP_WORDS_MEDIA[word]
    return media_polarity if FAMILY[domain] == "media" else 1 - media_polarity


def _cue(rng: random.Random, domain: str, kind: str, label: int) -> str:
    if kind == "shared":
        return rng.choice(SHARED_CUES[label]) + " ."
    if kind == "domain":
        return rng.choice(DOMAIN_CUES[domain][label]) + " ."
    words = [w for w in FLIP_WORDS_MEDIA if flip_polarity(w, domain) == label]
    return f"the {rng.choice(ASPECTS[domain])} is {rng.choice(words)} ."


def review(rng: random.Random, domain: str, label: int, rates: CueRates = CueRates()) -> str:
    """One review of ``domain`` whose cues express ``label`` (before label noise)."""
    item = rng.choice(ITEMS[domain])
    kinds = [k for k, rate in (("shared", rates.shared), ("domain", rates.domain), ("flip", rates.flip))
             if rng.random() < rate] or ["domain"]
    sentences = [_cue(rng, domain, k, label) for k in kinds]
    if rng.random() < rates.distractor:
        sentences.append(_cue(rng, domain, rng.choice(["shared", "domain"]), 1 - label))
    if rng.random() < 0.5:
        sentences.append(rng.choice(FILLERS).format(t=item))
    rng.shuffle(sentences)
    return " ".join([rng.choice(OPENERS).format(t=item), *sentences])


def generate(domain: str, split: str, size: int, seed: int = 0,
             rates: CueRates = CueRates()) -> tuple[list[str], list[int]]:
    """``size`` reviews of ``domain`` with balanced labels; the same (domain, split, seed) gives the same data.

    Each split draws from its own stream (the seed is mixed with the domain and split names through
    CRC32, which unlike ``hash()`` is stable across processes), so splits never share generated text
    by construction of the stream, and test sets do not change when train sizes do.
    """
    if domain not in ITEMS:
        raise ValueError(f"unknown synthetic domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    rng = random.Random(zlib.crc32(f"{seed}/{domain}/{split}".encode()))
    labels = [i % 2 for i in range(size)]
    rng.shuffle(labels)
    texts = [review(rng, domain, y, rates) for y in labels]
    noisy = [1 - y if rng.random() < rates.label_noise else y for y in labels]
    return texts, noisy
