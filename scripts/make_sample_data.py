#!/usr/bin/env python3
"""Write the bundled sample in SlimPajama's format: jsonl.zst, `text` + `meta.redpajama_set_name`.

The text is generated here from small grammars (no third-party text is copied in): encyclopedia
stubs, travel and cooking prose, dialogue, and short Python programs, with some non-ASCII names.
It has enough structure for a byte-level model to visibly learn in a few hundred steps on a CPU.
Deterministic: running it again writes the same files.

    python scripts/make_sample_data.py            # writes neurogen_tui/assets/sample_{train,val}.jsonl.zst
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import zstandard

OUT = Path(__file__).resolve().parents[1] / "neurogen_tui" / "assets"

NAMES = ["Anna", "Ben", "Clara", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kai", "Lena",
         "Marta", "Nils", "Olga", "Pavel", "Rosa", "Sven", "Tomás", "Zoë", "Renée", "Søren", "Jürgen", "Aiko"]
TOWNS = ["Millbrook", "Eastwick", "Stonehaven", "Kraków", "São Paulo", "Ålesund", "Riverton", "Oakridge",
         "Fairhaven", "Greenfield", "Ashford", "Brightwater", "Coldspring", "Dunmore", "Elmstead", "Zürich"]
REGIONS = ["northern", "southern", "eastern", "western", "central", "coastal", "mountain", "lake"]
NOUNS = ["river", "bridge", "market", "library", "garden", "harbour", "school", "station", "museum", "forest",
         "bakery", "castle", "valley", "square", "church", "mill", "road", "farm", "hill", "tower"]
ADJS = ["old", "quiet", "busy", "small", "large", "famous", "narrow", "green", "bright", "ancient", "new",
        "crowded", "peaceful", "historic", "modern", "wide"]
VERBS = ["walked to", "looked at", "painted", "visited", "cleaned", "repaired", "described", "photographed",
         "remembered", "found", "opened", "closed", "crossed", "watched"]
TIMES = ["in the morning", "after lunch", "in the evening", "at night", "before sunrise", "on Sunday",
         "every spring", "during the winter", "in the summer", "after the rain"]
FOODS = ["bread", "soup", "rice", "potatoes", "onions", "carrots", "beans", "apples", "cheese", "eggs",
         "tomatoes", "garlic", "butter", "flour", "milk", "honey"]
ACTIONS = ["chop", "boil", "mix", "bake", "stir", "slice", "fry", "warm", "season", "peel"]
INDUSTRIES = ["fishing", "farming", "timber", "tourism", "textiles", "shipbuilding", "mining", "trade"]


def sentence(r: random.Random) -> str:
    kind = r.randrange(5)
    if kind == 0:
        return f"{r.choice(NAMES)} {r.choice(VERBS)} the {r.choice(ADJS)} {r.choice(NOUNS)} {r.choice(TIMES)}."
    if kind == 1:
        return f"The {r.choice(NOUNS)} near the {r.choice(NOUNS)} was {r.choice(ADJS)} {r.choice(TIMES)}."
    if kind == 2:
        a, b = r.sample(NAMES, 2)
        return f"{a} and {b} {r.choice(VERBS)} the {r.choice(NOUNS)} in {r.choice(TOWNS)}."
    if kind == 3:
        return f"In {r.choice(TOWNS)}, the {r.choice(ADJS)} {r.choice(NOUNS)} is {r.choice(ADJS)} {r.choice(TIMES)}."
    return f"Many people say that the {r.choice(NOUNS)} of {r.choice(TOWNS)} is the most {r.choice(ADJS)} in the region."


def story(r: random.Random) -> str:
    return " ".join(sentence(r) for _ in range(r.randint(4, 12)))


def encyclopedia(r: random.Random) -> str:
    town, region = r.choice(TOWNS), r.choice(REGIONS)
    year, pop = r.randint(900, 1900), r.randint(800, 250000)
    lines = [f"{town} is a town in the {region} part of the country. It has a population of {pop:,} people.",
             f"The town was founded in {year} on the banks of the {r.choice(ADJS)} {r.choice(NOUNS)}.",
             f"Its economy is based on {r.choice(INDUSTRIES)} and {r.choice(INDUSTRIES)}.",
             f"The {r.choice(ADJS)} {r.choice(NOUNS)} of {town} was built in {year + r.randint(10, 400)}."]
    return "\n\n".join(lines[: r.randint(2, 4)] + [story(r)])


def recipe(r: random.Random) -> str:
    foods = r.sample(FOODS, r.randint(3, 6))
    steps = [f"{i + 1}. {r.choice(ACTIONS).capitalize()} the {f} for {r.randint(2, 30)} minutes."
             for i, f in enumerate(foods)]
    return (f"How to make {foods[0]} with {foods[1]}\n\nIngredients: " + ", ".join(foods) + ".\n\n"
            + "\n".join(steps) + f"\n\nServe {r.choice(TIMES)}.")


def dialogue(r: random.Random) -> str:
    a, b = r.sample(NAMES, 2)
    turns = []
    for _ in range(r.randint(3, 7)):
        turns.append(f'"Have you seen the {r.choice(NOUNS)} in {r.choice(TOWNS)}?" asked {a}.')
        turns.append(f'"Yes, I {r.choice(VERBS)} it {r.choice(TIMES)}," said {b}.')
    return "\n".join(turns)


def program(r: random.Random) -> str:
    fn, var = r.choice(["total", "count", "average", "largest", "smallest"]), r.choice(["items", "values", "numbers"])
    body = {"total": f"    result = 0\n    for x in {var}:\n        result += x\n    return result",
            "count": f"    return len({var})",
            "average": f"    return sum({var}) / len({var})",
            "largest": f"    return max({var})",
            "smallest": f"    return min({var})"}[fn]
    data = ", ".join(str(r.randint(0, 99)) for _ in range(r.randint(3, 8)))
    return (f"def {fn}({var}):\n    \"\"\"Return the {fn} of {var}.\"\"\"\n{body}\n\n\n"
            f"print({fn}([{data}]))\n")


SOURCES = [(story, "RedPajamaCommonCrawl", 4), (encyclopedia, "RedPajamaWikipedia", 3), (recipe, "RedPajamaC4", 2),
           (dialogue, "RedPajamaBook", 2), (program, "RedPajamaGithub", 1)]


def documents(seed: int, count: int):
    r = random.Random(seed)
    weighted = [(fn, name) for fn, name, w in SOURCES for _ in range(w)]
    for _ in range(count):
        fn, name = r.choice(weighted)
        yield {"text": fn(r), "meta": {"redpajama_set_name": name}}


def write(path: Path, seed: int, count: int) -> None:
    raw = "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in documents(seed, count)).encode()
    path.write_bytes(zstandard.ZstdCompressor(level=19).compress(raw))
    print(f"{path}: {count} documents, {len(raw) / 1e6:.2f} MB raw, {path.stat().st_size / 1e6:.2f} MB compressed")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    write(OUT / "sample_train.jsonl.zst", seed=1, count=12000)
    write(OUT / "sample_val.jsonl.zst", seed=2, count=300)
