"""The ``book`` task (MUSE-style): invented books memorised verbatim; forget one, keep the others.

MUSE (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language
Models") unlearns books and news from a model that memorised them, and measures
verbatim memorisation (ROUGE-L of the continuation of a passage from its prefix,
VerbMem) and knowledge memorisation (ROUGE-L of answers to questions about the text,
KnowMem) on the forgotten and the kept corpora. Here each invented book has its own
characters, places, objects, verbs and turns of phrase (so that one book's text does
not predict another's), and its passages are sentences of one small grammar:
"Arla carried the copper lantern across Dunmere, humming an old tune." Each passage
gives one question about what someone did and one about where. Book 0 is the forget
book. Prompt/response views of every passage (its first sentence, then the rest) serve
VerbMem.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from geffect.data import lexicon as lx
from geffect.data.generators.common import Row, task_rng

VERBS = (  # (past, base), dealt out to the books
    ("carried", "carry"), ("hid", "hide"), ("buried", "bury"), ("polished", "polish"), ("mended", "mend"),
    ("dropped", "drop"), ("painted", "paint"), ("traded", "trade"), ("lost", "lose"), ("found", "find"),
    ("stole", "steal"), ("wrapped", "wrap"), ("sold", "sell"), ("dragged", "drag"), ("guarded", "guard"),
    ("sharpened", "sharpen"), ("opened", "open"), ("locked", "lock"), ("weighed", "weigh"), ("tied", "tie"),
    ("washed", "wash"), ("burned", "burn"), ("counted", "count"), ("offered", "offer"), ("lifted", "lift"),
    ("rowed", "row"), ("pushed", "push"), ("planted", "plant"), ("tested", "test"), ("followed", "follow"),
    ("swapped", "swap"), ("carved", "carve"),
)
PREPOSITIONS = ("across", "beneath", "beside", "into", "through", "behind", "toward", "along", "near",
                "under", "above", "around")
ADJECTIVES = (
    "copper", "crooked", "painted", "heavy", "silver", "cracked", "velvet", "ancient", "tiny", "gilded",
    "rusty", "broken", "wooden", "frozen", "scarlet", "hollow", "woollen", "bitter", "smoky", "narrow",
    "golden", "muddy", "striped", "enormous",
)
NOUNS = (
    "lantern", "compass", "ledger", "violin", "kettle", "ladder", "anchor", "mirror", "basket", "sword",
    "clock", "drum", "saddle", "chest", "bell", "candle", "kite", "flute", "spade", "shawl", "trumpet",
    "barrel", "sack", "helmet",
)
TAILS = (
    "humming an old tune", "while the rain drummed overhead", "without a single word", "as the bells rang twelve",
    "before anyone woke", "with trembling hands", "laughing at nothing", "under a sky full of crows",
    "while the kettle whistled", "as fog rolled off the marsh", "counting every step", "in the last grey light",
    "whistling for the dog", "although snow was falling", "with a lamp held high", "as the tide turned",
    "pretending to be calm", "despite the howling wind", "long after supper", "beneath a crooked moon",
    "singing under her breath", "as sparks flew upward", "while geese passed overhead", "with mud to the knees",
)
PLACE_WORDS = ("Hollow", "Reach", "Ford", "Mere", "Crossing", "Heath", "Landing", "Fold")


def _deal(rng: random.Random, pool: Sequence, n_books: int) -> list[list]:
    """``pool`` shuffled and dealt into ``n_books`` disjoint hands."""
    order = rng.sample(list(pool), len(pool))
    size = len(pool) // n_books
    return [order[i * size:(i + 1) * size] for i in range(n_books)]


def _book(rng: random.Random, forge: lx.NameForge, index: int, verbs: list, preps: list, adjectives: list,
          nouns: list, tails: list, place_words: list, n_passages: int,
          sentences_per_passage: int) -> dict[str, list[Row]]:
    people = [forge.name(2, 2) for _ in range(4)]
    places = [f"{forge.name(2, 2)} {rng.choice(place_words)}" for _ in range(4)]
    objects = [f"{a} {n}" for a, n in zip(adjectives, nouns)]
    title = f"The {rng.choice(nouns).capitalize()} of {places[0]}"
    passages, verbatim, qa = [], [], []
    for p in range(n_passages):
        sentences, facts = [], []
        for tail in rng.sample(tails, sentences_per_passage):
            who, (past, base), what, prep, where = (rng.choice(people), rng.choice(verbs), rng.choice(objects),
                                                    rng.choice(preps), rng.choice(places))
            sentences.append(f"{who} {past} the {what} {prep} {where}, {tail}.")
            facts.append((who, past, base, what, prep, where))
        passages.append({"text": " ".join(sentences), "book": index, "title": title, "passage": p})
        verbatim.append({"prompt": sentences[0], "response": " " + " ".join(sentences[1:]), "book": index,
                         "passage": p})
        who, past, base, what, prep, where = facts[rng.randrange(len(facts))]
        qa.append({"question": f"In {title}, what did {who} {base} {prep} {where}?",
                   "answer": f"{who} {past} the {what}.", "book": index, "passage": p})
        who, past, base, what, prep, where = facts[rng.randrange(len(facts))]
        qa.append({"question": f"In {title}, where did {who} {base} the {what}?",
                   "answer": f"{who} {past} it {prep} {where}.", "book": index, "passage": p})
    return {"passages": passages, "verbatim": verbatim, "qa": qa}


def generate_books(seed: int = 0, n_books: int = 4, n_passages: int = 10, sentences_per_passage: int = 3,
                   forget_book: int = 0) -> dict[str, list[Row]]:
    """The book task's splits (deterministic in the arguments).

    Text rows (one per passage): ``forget`` (book ``forget_book``) and ``retain`` (the
    others). Prompt/response rows (first sentence, then the rest of the passage):
    ``forget_verbatim``, ``retain_verbatim``. QA rows (two per passage):
    ``forget_qa``, ``retain_qa``. Every row names its ``book`` and ``passage``.
    """
    if n_books < 2 or not 0 <= forget_book < n_books or n_passages < 1 or sentences_per_passage < 2:
        raise ValueError(f"need n_books >= 2, 0 <= forget_book < n_books, n_passages >= 1 and "
                         f"sentences_per_passage >= 2 (got {n_books}, {forget_book}, {n_passages}, "
                         f"{sentences_per_passage})")
    if n_books > len(PLACE_WORDS) // 2 or sentences_per_passage > len(TAILS) // n_books:
        raise ValueError(f"the word pools are dealt to at most {len(PLACE_WORDS) // 2} books with at most "
                         f"{len(TAILS) // n_books} sentences a passage, got {n_books} and {sentences_per_passage}")
    rng = task_rng("book", seed)
    forge = lx.NameForge(rng)
    hands = [_deal(rng, pool, n_books) for pool in (VERBS, PREPOSITIONS, ADJECTIVES, NOUNS, TAILS, PLACE_WORDS)]
    books = [_book(rng, forge, b, *(hand[b] for hand in hands), n_passages, sentences_per_passage)
             for b in range(n_books)]
    out: dict[str, list[Row]] = {}
    for part, suffix in (("passages", ""), ("verbatim", "_verbatim"), ("qa", "_qa")):
        out["forget" + suffix] = books[forget_book][part]
        out["retain" + suffix] = [row for b, book in enumerate(books) if b != forget_book for row in book[part]]
    return out


