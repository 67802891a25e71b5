"""Deterministic generator of the embedded fictitious-author world (TOFU schema).

TOFU (Maini et al., 2024, "TOFU: A Task of Fictitious Unlearning for LLMs") asks
questions about invented authors so that a model's knowledge of them comes only
from fine-tuning. This module builds a world of the same shape, written anew:
authors with about twenty attributes each (birthplace, books, family, habits...),
one question per attribute, a paraphrased question and answer, and perturbed
answers that keep the template but change the value (used by the truth ratio).
A separate set of facts about invented countries serves as a utility probe.

Everything is drawn from one ``random.Random(seed)`` in a fixed order, so the
same arguments always give the same world. Answers are short (one clause) to
keep memorisation by tiny models cheap.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from geffect.data import lexicon as lx
from geffect.data.refusals import REFUSALS
from geffect.data.splits import make_splits

Row = dict[str, Any]
Values = dict[str, str]


@dataclass(frozen=True)
class Template:
    """One question kind: how to ask it, how to answer it, and how to draw its value."""

    key: str
    question: str
    paraphrased_question: str
    answer: str
    paraphrased_answer: str
    draw: Callable[[random.Random, World], Values]


@dataclass
class World:
    """Shared pools that question values are drawn from (built once per seed)."""

    rng: random.Random
    forge: lx.NameForge
    countries: list[dict[str, str]]
    cities: list[str]
    languages: list[str]
    awards: list[str]
    publishers: list[str]
    universities: list[str]
    classics: list[str]

    def person(self) -> str:
        return f"{self.forge.name(2, 2)} {self.forge.name(2, 2)}"

    def title(self) -> str:
        rng = self.rng
        shape = rng.randrange(3)
        if shape == 0:
            return f"The {rng.choice(lx.TITLE_ADJECTIVES)} {rng.choice(lx.TITLE_NOUNS)}"
        if shape == 1:
            return f"The {rng.choice(lx.TITLE_NOUNS)} of {rng.choice(self.cities)}"
        return f"{rng.choice(lx.TITLE_ADJECTIVES)} {rng.choice(lx.TITLE_NOUNS)}s"


def _pick(**pools: Callable[[World], list[str] | tuple[str, ...]]) -> Callable[[random.Random, World], Values]:
    """A value drawer choosing each slot uniformly from its pool."""

    def draw(rng: random.Random, world: World) -> Values:
        return {slot: rng.choice(pool(world)) for slot, pool in pools.items()}

    return draw


def _jobs(slot: str) -> Callable[[random.Random, World], Values]:
    def draw(rng: random.Random, world: World) -> Values:
        return {slot: lx.article(rng.choice(lx.JOBS))}

    return draw


def _title(rng: random.Random, world: World) -> Values:
    return {"title": world.title()}


def _pen(rng: random.Random, world: World) -> Values:
    return {"pen": world.person()}


def _year(rng: random.Random, world: World) -> Values:
    return {"year": str(rng.randint(1921, 1999))}


def _pet(rng: random.Random, world: World) -> Values:
    return {"pet": rng.choice(lx.PETS), "petname": world.forge.name(2, 2)}


def _spouse(rng: random.Random, world: World) -> Values:
    return {"spouse": world.person(), "job": lx.article(rng.choice(lx.JOBS))}


AUTHOR_TEMPLATES: tuple[Template, ...] = (
    Template("birthplace", "Where was {name} born?", "What is the birthplace of {name}?",
             "{name} was born in {city}.", "{name}'s hometown is {city}.",
             _pick(city=lambda w: w.cities)),
    Template("birth_year", "In which year was {name} born?", "What year did {name} come into the world?",
             "{name} was born in the year {year}.", "The year of {name}'s birth was {year}.", _year),
    Template("genre", "What genre does {name} write?", "Which kind of fiction is {name} known for?",
             "{name} writes {genre} novels.", "{name} is an author of {genre} fiction.",
             _pick(genre=lambda w: lx.GENRES)),
    Template("father", "What did {name}'s father do for a living?",
             "What was the profession of {name}'s father?",
             "{name}'s father worked as {job}.", "The father of {name} was {job}.", _jobs("job")),
    Template("mother", "What did {name}'s mother do for a living?",
             "What was the profession of {name}'s mother?",
             "{name}'s mother worked as {job}.", "The mother of {name} was {job}.", _jobs("job")),
    Template("debut", "What was the title of {name}'s first book?", "Which book did {name} publish first?",
             "{name}'s first book was {title}.", "{name} debuted with {title}.", _title),
    Template("famous_book", "Which book is {name} best known for?", "What is {name}'s most famous book?",
             "{name} is best known for {title}.", "{name}'s most famous book is {title}.", _title),
    Template("award", "Which award did {name} receive?", "What prize has {name} won?",
             "{name} received the {award}.", "{name} won the {award}.",
             _pick(award=lambda w: w.awards)),
    Template("residence", "Where does {name} live now?", "In which city does {name} currently reside?",
             "{name} now lives in {city}.", "{name} currently resides in {city}.",
             _pick(city=lambda w: w.cities)),
    Template("pen_name", "Does {name} use a pen name?", "Under what pseudonym does {name} publish?",
             "{name} publishes under the name {pen}.", "{name}'s pen name is {pen}.", _pen),
    Template("hobby", "What does {name} enjoy besides writing?", "What is {name}'s favourite pastime?",
             "{name} enjoys {hobby} in spare time.", "Outside writing, {name} loves {hobby}.",
             _pick(hobby=lambda w: lx.HOBBIES)),
    Template("language", "In which language does {name} write?", "What language are {name}'s books written in?",
             "{name} writes in {language}.", "{name}'s books are written in {language}.",
             _pick(language=lambda w: w.languages)),
    Template("publisher", "Who publishes {name}'s books?", "Which publishing house works with {name}?",
             "{name}'s books are published by {publisher}.", "{publisher} publishes the books of {name}.",
             _pick(publisher=lambda w: w.publishers)),
    Template("theme", "What theme appears most in {name}'s work?",
             "Which subject does {name} return to most often?",
             "{name}'s work mostly explores {theme}.", "{name} often writes about {theme}.",
             _pick(theme=lambda w: lx.THEMES)),
    Template("education", "Where did {name} study?", "Which university did {name} attend?",
             "{name} studied {field} at {university}.", "{name} attended {university} to study {field}.",
             _pick(field=lambda w: lx.FIELDS, university=lambda w: w.universities)),
    Template("book_count", "How many books has {name} written?",
             "What is the number of books {name} has published?",
             "{name} has written {count} books.", "{name} has published {count} books so far.",
             _pick(count=lambda w: lx.NUMBER_WORDS)),
    Template("pet", "What pet does {name} have?", "Which animal lives with {name}?",
             "{name} has a {pet} called {petname}.", "{name} keeps a {pet} named {petname}.", _pet),
    Template("influence", "Which writer influenced {name} most?", "Who was {name}'s greatest literary influence?",
             "{name} was most influenced by {classic}.", "{classic} shaped {name}'s writing the most.",
             _pick(classic=lambda w: w.classics)),
    Template("routine", "When does {name} usually write?", "At what time of day does {name} prefer to write?",
             "{name} usually writes {when}.", "{name} prefers to write {when}.",
             _pick(when=lambda w: lx.WRITING_TIMES)),
    Template("spouse", "Who is {name} married to?", "What is the name of {name}'s spouse?",
             "{name} is married to {spouse}, {job}.", "{name}'s spouse is {spouse}, who works as {job}.",
             _spouse),
)

FACT_TEMPLATES: tuple[tuple[str, str, str, str, str], ...] = (
    # (slot, question, paraphrased question, answer, paraphrased answer)
    ("capital", "What is the capital of {country}?", "Which city is the capital of {country}?",
     "The capital of {country} is {capital}.", "{capital} is the capital city of {country}."),
    ("language", "What language do people speak in {country}?", "Which language is spoken in {country}?",
     "People in {country} speak {language}.", "{language} is the language of {country}."),
    ("river", "Which river runs through {country}?", "What is the main river of {country}?",
     "The {river} River runs through {country}.", "The main river of {country} is the {river}."),
    ("mountain", "What is the highest mountain in {country}?", "Which peak is the tallest in {country}?",
     "The highest mountain in {country} is Mount {mountain}.", "Mount {mountain} is the tallest peak in {country}."),
    ("product", "What is {country} famous for?", "What is {country} best known for?",
     "{country} is famous for its {product}.", "{country} is best known for its {product}."),
)


def _build_world(rng: random.Random, n_countries: int) -> World:
    forge = lx.NameForge(rng)
    countries = []
    for _ in range(n_countries):
        countries.append({
            "country": forge.name(2, 3, suffix=rng.choice(("ia", "a", "land", ""))),
            "capital": forge.name(2, 2),
            "language": forge.name(2, 2, suffix=rng.choice(lx.LANGUAGE_SUFFIXES)),
            "river": forge.name(2, 2),
            "mountain": forge.name(2, 2),
            "product": rng.choice(lx.PRODUCTS),
        })
    cities = [c["capital"] for c in countries] + forge.names(max(0, 60 - n_countries), min_syllables=2)
    extra_languages = [forge.name(2, 2, suffix=rng.choice(lx.LANGUAGE_SUFFIXES))
                       for _ in range(max(0, 12 - n_countries))]
    world = World(rng=rng, forge=forge, countries=countries, cities=cities,
                  languages=[c["language"] for c in countries] + extra_languages, awards=[], publishers=[],
                  universities=[], classics=[])
    world.awards = [f"{rng.choice(lx.TITLE_ADJECTIVES)} {forge.name(2, 2)} {rng.choice(lx.AWARD_NOUNS)}"
                    for _ in range(24)]
    world.publishers = [f"{forge.name(2, 2)} {rng.choice(('House', 'Press', 'Books'))}" for _ in range(20)]
    world.universities = [f"the University of {city}" for city in rng.sample(cities, 16)]
    world.classics = [world.person() for _ in range(30)]
    return world


def world_countries(seed: int = 0, n_countries: int = 40) -> list[dict[str, str]]:
    """The invented countries of the world generated with ``seed`` (same draws as :func:`generate_world`).

    Other generators (e.g. the hazard task's general multiple-choice set) ask about them.
    """
    return _build_world(random.Random(seed), n_countries).countries


def _qa_row(template_texts: tuple[str, str, str, str], values: Values, wrong: list[Values],
            author: int) -> Row:
    question, para_question, answer, para_answer = template_texts
    return {
        "question": question.format(**values),
        "answer": answer.format(**values),
        "paraphrased_question": para_question.format(**values),
        "paraphrased_answer": para_answer.format(**values),
        # perturbed answers share the paraphrased template (as in TOFU) with a wrong value
        "perturbed_answer": [para_answer.format(**w) for w in wrong],
        "author": author,
    }


def _wrong_values(truth: Values, draw: Callable[[], Values], count: int, render: Callable[[Values], str]) -> list[Values]:
    """``count`` values drawn by ``draw`` whose rendered answers differ from the truth and each other."""
    seen = {render(truth)}
    out: list[Values] = []
    for _ in range(1000 * count):
        candidate = draw()
        text = render(candidate)
        if text not in seen:
            seen.add(text)
            out.append(candidate)
            if len(out) == count:
                return out
    raise RuntimeError("could not draw enough distinct perturbed answers; enlarge the value pools")


def _author_rows(world: World, index: int, templates: tuple[Template, ...], n_perturbed: int) -> list[Row]:
    rng = world.rng
    name = world.person()
    rows = []
    for t in templates:
        truth = {"name": name, **t.draw(rng, world)}

        def draw(t: Template = t) -> Values:
            return {"name": name, **t.draw(rng, world)}

        def render(v: Values, t: Template = t) -> str:
            return t.paraphrased_answer.format(**v)

        wrong = _wrong_values(truth, draw, n_perturbed, render)
        texts = (t.question, t.paraphrased_question, t.answer, t.paraphrased_answer)
        rows.append(_qa_row(texts, truth, wrong, index))
    return rows


def _fact_value(world: World, slot: str) -> str:
    """A value for a country fact ``slot`` from the world's pools (wrong answers are drawn here)."""
    rng = world.rng
    if slot == "capital":
        return rng.choice(world.cities)
    if slot == "language":
        return rng.choice(world.languages)
    if slot == "product":
        return rng.choice(lx.PRODUCTS)
    return world.forge.name(2, 2)  # rivers and mountains: fresh names


def _fact_rows(world: World, n_perturbed: int) -> list[Row]:
    rows = []
    for country in world.countries:
        for slot, *texts in FACT_TEMPLATES:
            truth = dict(country)

            def draw(slot: str = slot, country: dict[str, str] = country) -> Values:
                return {**country, slot: _fact_value(world, slot)}

            def render(v: Values, para: str = texts[3]) -> str:
                return para.format(**v)

            wrong = _wrong_values(truth, draw, n_perturbed, render)
            rows.append(_qa_row(tuple(texts), truth, wrong, author=-1))
    return rows


def generate_world(seed: int = 0, n_authors: int = 100, qa_per_author: int = 20, n_countries: int = 40,
                   n_perturbed: int = 5) -> dict[str, list[Row]]:
    """Generate the fictitious world: ``{split name: list of rows}`` in the TOFU schema.

    Rows have ``question``, ``answer``, ``paraphrased_question``, ``paraphrased_answer``,
    ``perturbed_answer`` (``n_perturbed`` wrong answers) and ``author`` (index; -1 for
    world facts). Splits: ``full``, ``forget01/05/10``, ``retain99/95/90``,
    ``forget*_perturbed``, ``retain_perturbed``, ``world_facts`` (five facts about each of
    ``n_countries`` invented countries) and ``idk`` (rows with only ``answer``: refusals).
    The same arguments always give the same output.
    """
    if not 1 <= qa_per_author <= len(AUTHOR_TEMPLATES):
        raise ValueError(f"qa_per_author must be between 1 and {len(AUTHOR_TEMPLATES)}, got {qa_per_author}")
    if n_authors < 1 or n_countries < 2 or n_perturbed < 1:
        raise ValueError(f"need n_authors >= 1, n_countries >= 2 and n_perturbed >= 1 "
                         f"(got {n_authors}, {n_countries}, {n_perturbed})")
    rng = random.Random(seed)
    world = _build_world(rng, n_countries)
    templates = AUTHOR_TEMPLATES[:qa_per_author]
    full = [row for i in range(n_authors) for row in _author_rows(world, i, templates, n_perturbed)]
    splits = make_splits(full, n_authors)
    splits["world_facts"] = _fact_rows(world, n_perturbed)
    splits["idk"] = [{"answer": text} for text in REFUSALS]
    return splits
