"""The PERSON-span tagger: gold spans from the world's templates, span F1, held-out F1, the scorer."""

from __future__ import annotations

import pytest

from geffect.evaluation.persons import (
    PersonTagger,
    load_person_tagger,
    span_f1,
    template_spans,
    tokenize,
    train_person_tagger,
    world_person_texts,
)


def test_template_spans_mark_person_slots_only():
    text = "Ana Bel is married to Cor Dun, a baker."
    assert template_spans(text, "{name} is married to {spouse}, {job}.") == ((0, 7), (22, 29))
    assert template_spans("The capital of Ixia is Oom.", "The capital of {country} is {capital}.") == ()
    assert template_spans("Ana Bel has a cat called Tib.", "{name} has a {pet} called {petname}.") == ((0, 7),)
    assert template_spans("no match", "{name} writes.") is None
    assert template_spans("Bo and Bo", "{name} and {name}") == ((0, 2), (7, 9))  # a repeated slot


def test_span_f1_on_hand_counted_spans():
    predicted = [[(0, 5), (10, 12)], [], [(3, 4)]]
    gold = [[(0, 5)], [(1, 2)], [(3, 4)]]
    # hits 2, predicted 3, gold 3
    assert span_f1(predicted, gold) == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3,
                                                      "gold_spans": 3})


def test_tokens_split_possessives():
    assert [t for t, _, _ in tokenize("Ana Bel's cat, 1932.")] == ["Ana", "Bel", "'s", "cat", ",", "1932", "."]


def test_every_world_text_has_its_template_spans():
    texts = world_person_texts()
    authors = [t for t in texts if t.group.startswith("author")]
    facts = [t for t in texts if t.group.startswith("country")]
    assert authors and facts
    assert all(t.spans for t in authors if t.text.endswith("?"))  # every question names its author
    assert not any(t.spans for t in facts)


@pytest.mark.slow
def test_tagger_heldout_f1_and_scores(tmp_path):
    tagger, report = train_person_tagger(heldout=0.2, seed=0)
    print(f"person tagger held-out span F1 {report['heldout_f1']:.4f} "
          f"({report['heldout_gold_spans']} spans, {report['heldout_texts']} texts of unseen authors/countries)")
    assert report["heldout_f1"] >= 0.95
    person, place = tagger.score(["Ana Belsto is married to Cor Dunnel, a baker.",
                                  "The capital of Ixiland is Oomtar."])
    assert person > 0.3 and place < 0.05
    tagger.save(tmp_path / "t.json")
    again = PersonTagger.load(tmp_path / "t.json")
    assert again.score(["Ana Belsto writes in Frollish."]) == pytest.approx(tagger.score(["Ana Belsto writes in Frollish."]))
    assert load_person_tagger().score([""]) == [0.0]
