"""A PERSON-span tagger trained on the embedded world's own text, and the ``persons`` scorer.

The world's generator knows which spans are people: its templates mark the slots ``name`` (the
author), ``spouse``, ``pen`` (pen name) and ``classic`` (an influence). Every text of the world
(questions, answers, paraphrases, perturbed answers of ``full`` and ``world_facts``) is matched
against its template to recover those spans; cities, countries, rivers, awards, publishers, book
titles and pet names — drawn from the same invented-name forge — are the negatives, so the tagger
must read context, not spelling. It is a logistic regression per word on context features
(the word, its shape and suffix, the two words either side), and a run of words tagged PERSON is
a span. Held-out F1 is measured on authors and countries it never saw.

The scorer (``score(texts)``, issue #11's "how much person content a generation holds") is the
expected share of a text's words that lie in person spans: about 0.3 for an author answer, 0 for a
country fact. That reading is an interpretation; a real NER model plugs in as any scorer does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from geffect.evaluation.classifier import fit_logistic, presence_matrix, vocabulary_of

PERSON_SLOTS = frozenset({"name", "spouse", "pen", "classic"})
TOKEN = re.compile(r"[A-Za-z]+|[0-9]+|'s\b|\S")
FORMAT = "geffect-person-tagger/1"
Span = tuple[int, int]  # character offsets [start, end)


@dataclass(frozen=True)
class TaggedText:
    """A text, the character spans of the people it names, and the group it belongs to (for splits)."""

    text: str
    spans: tuple[Span, ...]
    group: str


# -- gold spans from the generator's templates ----------------------------------------------------


@cache
def _template_pattern(template: str) -> re.Pattern:
    """A regex matching ``template``: ``{slot}`` is group ``slot``, a repeat ``slot__k`` (back-referenced)."""
    parts, seen, last = [], {}, 0
    for match in re.finditer(r"\{(\w+)\}", template):
        parts.append(re.escape(template[last:match.start()]))
        slot = match.group(1)
        if slot in seen:
            seen[slot] += 1
            parts.append(f"(?P<{slot}__{seen[slot]}>(?P={slot}))")
        else:
            seen[slot] = 0
            parts.append(f"(?P<{slot}>.+?)")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts))


def template_spans(text: str, template: str) -> tuple[Span, ...] | None:
    """Person spans of ``text`` rendered from ``template`` (``None`` when it does not match)."""
    match = _template_pattern(template).fullmatch(text)
    if match is None:
        return None
    return tuple(sorted(match.span(g) for g in match.groupdict() if g.split("__")[0] in PERSON_SLOTS))


def _row_texts(row: dict[str, Any], forms: Sequence[str]) -> Iterable[tuple[str, str]]:
    """(text, template) pairs of a world row: question, answers, paraphrases, perturbed answers."""
    question, para_question, answer, para_answer = forms
    yield row["question"], question
    yield row["answer"], answer
    if row.get("paraphrased_question"):
        yield row["paraphrased_question"], para_question
    if row.get("paraphrased_answer"):
        yield row["paraphrased_answer"], para_answer
    for wrong in row.get("perturbed_answer") or []:
        yield wrong, para_answer


def world_person_texts(world: Any = None) -> list[TaggedText]:
    """Every text of the world's ``full`` and ``world_facts`` splits with its gold person spans.

    Author rows use the author templates in order (one row per template per author, as the
    generator writes them); fact rows use the five country-fact templates in order.
    """
    from geffect.data import load_world
    from geffect.data.world import AUTHOR_TEMPLATES, FACT_TEMPLATES

    world = load_world() if world is None else world
    out: list[TaggedText] = []
    position: dict[int, int] = {}
    for row in world["full"]:
        author = int(row["author"])
        index = position.get(author, 0)
        position[author] = index + 1
        t = AUTHOR_TEMPLATES[index]
        out += _tagged(row, (t.question, t.paraphrased_question, t.answer, t.paraphrased_answer), f"author{author}")
    for index, row in enumerate(world["world_facts"]):
        _, *forms = FACT_TEMPLATES[index % len(FACT_TEMPLATES)]
        out += _tagged(row, tuple(forms), f"country{index // len(FACT_TEMPLATES)}")
    return out


def _tagged(row: dict[str, Any], forms: tuple[str, ...], group: str) -> list[TaggedText]:
    tagged = []
    for text, template in _row_texts(row, forms):
        spans = template_spans(text, template)
        if spans is None:
            raise ValueError(f"world text {text!r} does not match its template {template!r}")
        tagged.append(TaggedText(text, spans, group))
    return tagged


# -- features ----------------------------------------------------------------------------------------


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Words, numbers, possessive ``'s`` and punctuation of ``text`` as (token, start, end)."""
    return [(m.group(), m.start(), m.end()) for m in TOKEN.finditer(text)]


def _shape(token: str) -> str:
    if token[0].isupper():
        return "Xx"
    if token[0].isalpha():
        return "x"
    if token[0].isdigit():
        return "d"
    return token


def token_features(tokens: Sequence[str], i: int) -> list[str]:
    """Context features of token ``i``: word, shape, suffix, neighbours and their shapes."""
    def word(j: int) -> str:
        return tokens[j].lower() if 0 <= j < len(tokens) else ("<s>" if j < 0 else "</s>")

    def shape(j: int) -> str:
        return _shape(tokens[j]) if 0 <= j < len(tokens) else word(j)

    here = shape(i)
    return [f"w={word(i)}", f"s={here}", f"suf={word(i)[-3:]}", f"first={i == 0}|{here}",
            f"p1={word(i - 1)}", f"p2={word(i - 2)}", f"n1={word(i + 1)}", f"n2={word(i + 2)}",
            f"p1s={shape(i - 1)}|{here}", f"n1s={shape(i + 1)}|{here}", f"p2w={word(i - 2)}|{word(i - 1)}",
            f"n2w={word(i + 1)}|{word(i + 2)}", f"p1n1={shape(i - 1)}|{here}|{shape(i + 1)}"]


def token_labels(text: str, spans: Sequence[Span]) -> list[int]:
    """1 for tokens inside a person span, else 0."""
    return [int(any(s <= start and end <= e for s, e in spans)) for _, start, end in tokenize(text)]


# -- the tagger -----------------------------------------------------------------------------------


@dataclass
class PersonTagger:
    """P(token is part of a person's name | context) = sigmoid(bias + Σ weights of its features)."""

    vocabulary: dict[str, int]
    weights: np.ndarray
    bias: float
    threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, texts: Sequence[TaggedText], l2: float = 1.0, min_count: int = 2) -> PersonTagger:
        """Fit on tagged texts: features seen in ≥ ``min_count`` tokens, L2 weight ``l2``."""
        rows, labels = [], []
        for item in texts:
            tokens = [t for t, _, _ in tokenize(item.text)]
            rows += [token_features(tokens, i) for i in range(len(tokens))]
            labels += token_labels(item.text, item.spans)
        vocabulary = vocabulary_of(rows, min_count)
        tagger = cls(vocabulary, np.zeros(len(vocabulary)), 0.0)
        tagger.weights, tagger.bias, converged = fit_logistic(presence_matrix(rows, vocabulary), labels, l2)
        tagger.info = {"train_texts": len(texts), "train_tokens": len(labels), "l2": l2, "min_count": min_count,
                       "features": len(vocabulary), "converged": converged}
        return tagger

    def token_probabilities(self, text: str) -> list[tuple[str, int, int, float]]:
        """(token, start, end, P(person)) for every token of ``text``."""
        tokens = tokenize(text)
        if not tokens:
            return []
        words = [t for t, _, _ in tokens]
        features = [token_features(words, i) for i in range(len(words))]
        probs = expit(presence_matrix(features, self.vocabulary) @ self.weights + self.bias)
        return [(t, s, e, float(p)) for (t, s, e), p in zip(tokens, probs)]

    def spans(self, text: str) -> list[Span]:
        """Character spans of maximal runs of tokens tagged PERSON (possessive ``'s`` excluded)."""
        out: list[Span] = []
        for token, start, end, p in self.token_probabilities(text):
            if p >= self.threshold and token != "'s":
                if out and text[out[-1][1]:start].strip() == "":
                    out[-1] = (out[-1][0], end)
                else:
                    out.append((start, end))
        return out

    def score(self, texts: Sequence[str]) -> list[float]:
        """Per text: the expected share of its words (letters or digits) inside person names."""
        if isinstance(texts, str):
            raise TypeError("score takes a sequence of texts, not one string")
        out = []
        for text in texts:
            probs = [p for token, _, _, p in self.token_probabilities(text) if token[0].isalnum()]
            out.append(float(np.mean(probs)) if probs else 0.0)
        return out

    # -- storage ----------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the tagger as JSON (features and weights; nothing executable)."""
        weights = {f: round(float(self.weights[i]), 6) for f, i in self.vocabulary.items()}
        data = {"format": FORMAT, "bias": round(self.bias, 6), "threshold": self.threshold, "weights": weights,
                "info": self.info}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> PersonTagger:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a geffect person tagger (format {data.get('format')!r})")
        names = sorted(data["weights"])
        return cls({f: i for i, f in enumerate(names)}, np.array([data["weights"][f] for f in names]),
                   float(data["bias"]), float(data.get("threshold", 0.5)), data.get("info", {}))


# -- evaluation -------------------------------------------------------------------------------------


def span_f1(predicted: Sequence[Sequence[Span]], gold: Sequence[Sequence[Span]]) -> dict[str, float]:
    """Exact-match span precision, recall and F1 over paired lists of spans."""
    hits = sum(len(set(p) & set(g)) for p, g in zip(predicted, gold, strict=True))
    n_pred, n_gold = sum(len(p) for p in predicted), sum(len(g) for g in gold)
    precision = hits / n_pred if n_pred else 1.0
    recall = hits / n_gold if n_gold else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "gold_spans": n_gold}


def split_groups(texts: Sequence[TaggedText], heldout: float, seed: int) -> tuple[list[TaggedText], list[TaggedText]]:
    """Train / held-out texts, holding out a seeded ``heldout`` share of authors and countries."""
    groups = sorted({t.group for t in texts})
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(groups, size=max(1, round(heldout * len(groups))), replace=False).tolist())
    return [t for t in texts if t.group not in chosen], [t for t in texts if t.group in chosen]


def train_person_tagger(world: Any = None, heldout: float = 0.2, seed: int = 0,
                        l2: float = 1.0) -> tuple[PersonTagger, dict[str, float]]:
    """Fit the tagger on the world's texts except a held-out share of authors and countries.

    Returns the tagger and its held-out span precision / recall / F1 (also in ``tagger.info``).
    """
    texts = world_person_texts(world)
    train, test = split_groups(texts, heldout, seed)
    tagger = PersonTagger.fit(train, l2=l2)
    report = span_f1([tagger.spans(t.text) for t in test], [list(t.spans) for t in test])
    report = {f"heldout_{k}": v for k, v in report.items()}
    report.update(heldout_texts=len(test), heldout_share=heldout, seed=seed)
    tagger.info.update(report)
    return tagger, report


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geffect"


@lru_cache(maxsize=1)
def load_person_tagger(cache: bool = True) -> PersonTagger:
    """The tagger of the embedded world (trained once, ~10-20 s on a CPU, then cached on disk).

    The cache file is keyed by the world's content hash and this module's format, so a rebuilt
    world trains a new tagger; ``cache=False`` always trains.
    """
    from geffect.data.store import read_manifest

    path = _cache_dir() / f"person-tagger-{read_manifest()['content_hash'][:16]}-{FORMAT.split('/')[-1]}.json"
    if cache and path.is_file():
        return PersonTagger.load(path)
    tagger, _ = train_person_tagger()
    if cache:
        try:
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tagger.save(tmp)
            os.replace(tmp, path)
        except OSError:  # a read-only home: keep the tagger in memory only
            pass
    return tagger
