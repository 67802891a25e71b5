"""Word lists and a syllable name forge for the invented world.

Everything here was written for geffect: the names it makes are combinations of
short syllables, so they look like proper nouns but belong to no real person or
place. :class:`NameForge` draws from a caller-supplied ``random.Random`` and never
hands out the same name twice, which keeps the world deterministic for a seed and
every author, city and country uniquely addressable.
"""

from __future__ import annotations

import random

ONSETS = (
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    "br", "dr", "kr", "st", "tr", "th", "sh", "h", "j",
)
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei", "ou", "ia")
CODAS = ("", "", "", "", "n", "r", "l", "s", "m", "th")


class NameForge:
    """Unique invented proper nouns from syllables, drawn from ``rng``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def _word(self, syllables: int) -> str:
        parts = []
        for _ in range(syllables):
            parts.append(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS))
        return "".join(parts).capitalize()

    def name(self, min_syllables: int = 2, max_syllables: int = 3, suffix: str = "") -> str:
        """A fresh capitalised name (plus ``suffix``) not returned before by this forge."""
        for _ in range(10_000):
            word = self._word(self.rng.randint(min_syllables, max_syllables)) + suffix
            if word not in self.used and 4 <= len(word) <= 10:
                self.used.add(word)
                return word
        raise RuntimeError("NameForge ran out of fresh names; widen the syllable inventory")

    def names(self, count: int, **kwargs: int | str) -> list[str]:
        return [self.name(**kwargs) for _ in range(count)]


def article(noun: str) -> str:
    """``noun`` with its indefinite article ('a tailor', 'an archivist')."""
    return ("an " if noun[0].lower() in "aeiou" else "a ") + noun


GENRES = (
    "mystery", "romance", "horror", "fantasy", "crime", "adventure", "gothic", "spy",
    "western", "historical", "satirical", "pastoral", "seafaring", "courtroom", "detective",
    "dystopian", "epistolary", "folk", "mountaineering", "railway",
)
JOBS = (
    "baker", "tailor", "carpenter", "sailor", "doctor", "teacher", "fisherman", "blacksmith",
    "librarian", "gardener", "potter", "miller", "lawyer", "clockmaker", "shepherd", "painter",
    "surveyor", "chemist", "glassblower", "beekeeper", "mapmaker", "bookbinder", "cook", "mason",
    "weaver", "nurse", "pharmacist", "ferryman", "locksmith", "astronomer", "midwife", "archivist",
    "engineer", "optician", "jeweller", "printer",
)
TITLE_ADJECTIVES = (
    "Amber", "Silent", "Broken", "Hollow", "Crimson", "Distant", "Frozen", "Gilded", "Hidden",
    "Last", "Lonely", "Midnight", "Painted", "Restless", "Salt", "Scarlet", "Sleeping", "Stolen",
    "Velvet", "Wandering", "Winter", "Burning", "Copper", "Drowned", "Quiet", "Iron", "Paper",
    "Glass", "Forgotten", "Seventh",
)
TITLE_NOUNS = (
    "Lantern", "Harbour", "Orchard", "Garden", "Mirror", "Bridge", "Compass", "Tower", "Letter",
    "River", "Window", "Kingdom", "Lighthouse", "Violin", "Map", "Staircase", "Island", "Clock",
    "Feather", "Meadow", "Archive", "Carousel", "Ferry", "Chapel", "Atlas", "Tide", "Orchid",
    "Ledger", "Station", "Balcony",
)
AWARD_NOUNS = ("Prize", "Medal", "Award", "Laurel", "Quill", "Crown")
HOBBIES = (
    "beekeeping", "rock climbing", "chess", "sailing", "birdwatching", "pottery", "fencing",
    "gardening", "stargazing", "rowing", "knitting", "cycling", "archery", "baking bread",
    "collecting stamps", "fishing", "hiking", "wood carving", "playing the cello",
    "painting watercolours", "swimming in lakes", "repairing clocks", "folk dancing",
    "growing orchids",
)
THEMES = (
    "grief", "exile", "memory", "loyalty", "ambition", "forgiveness", "friendship", "betrayal",
    "identity", "solitude", "revenge", "redemption", "family secrets", "lost love", "the sea",
    "childhood", "faith", "freedom", "justice", "old age", "migration", "guilt",
)
FIELDS = (
    "history", "medicine", "law", "botany", "music", "philosophy", "physics", "architecture",
    "economics", "theology", "astronomy", "chemistry", "linguistics", "geology", "mathematics",
    "zoology",
)
PETS = ("cat", "dog", "parrot", "tortoise", "rabbit", "goat", "owl", "ferret", "canary", "horse")
WRITING_TIMES = (
    "at dawn", "late at night", "after lunch", "before breakfast", "in the early evening",
    "at midnight", "on rainy afternoons", "during the morning", "on weekends only",
    "by candlelight", "on long train rides", "in the garden at noon",
)
NUMBER_WORDS = (
    "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)
PRODUCTS = (
    "blue cheese", "silk carpets", "clockwork toys", "salt caves", "copper kettles", "wild honey",
    "glass beads", "hot springs", "black tea", "paper lanterns", "painted tiles", "wool blankets",
    "river pearls", "dried figs", "wooden boats", "marble quarries", "spiced bread",
    "cherry wine", "stone bridges", "lavender fields", "amber jewellery", "pipe organs",
    "smoked fish", "cliff monasteries",
)
LANGUAGE_SUFFIXES = ("ian", "ese", "ic", "ish")
