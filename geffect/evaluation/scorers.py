"""Text scorers: anything with ``score(texts) -> list[float]``, by name or as an object.

A scorer returns, per text, the probability in [0, 1] that it holds a concept (toxic,
harmful). The shipped ``"toxicity"`` and ``"harm"`` scorers are small classifiers
(:class:`~geffect.evaluation.classifier.BagOfWordsClassifier`) trained by ``geffect
build-world`` on the tasks' synthetic labelled text and stored as JSON under
``data/scorers/``; they understand the invented words of those tasks and nothing else.
``"persons"`` is the PERSON-span tagger of the embedded world (:mod:`geffect.evaluation.persons`;
the share of a text's words inside people's names), trained on first use and cached.
For a real model plug in a real scorer wherever one is taken — any object with a
``score`` method, e.g. a Detoxify wrapper::

    class DetoxifyScorer:
        def __init__(self):
            from detoxify import Detoxify
            self.model = Detoxify("original")
        def score(self, texts):
            return list(self.model.predict(list(texts))["toxicity"])

    geffect.evaluation.register_scorer("detoxify", DetoxifyScorer)

or :class:`TransformersScorer` around any Hugging Face text-classification model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from geffect.data.paths import data_root
from geffect.evaluation.classifier import BagOfWordsClassifier


@runtime_checkable
class Scorer(Protocol):
    """What geffect needs of a scorer."""

    def score(self, texts: Sequence[str]) -> list[float]: ...


SHIPPED_SCORERS = ("toxicity", "harm")
_FACTORIES: dict[str, Callable[[], Scorer]] = {}
_CACHE: dict[str, Scorer] = {}


def scorers_dir() -> Path:
    """Folder of the shipped scorers: ``<data root>/scorers``."""
    return data_root() / "scorers"


def _shipped(name: str) -> Callable[[], Scorer]:
    def load() -> Scorer:
        path = scorers_dir() / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"shipped scorer {name!r} not found at {path}; run `geffect build-world`")
        return BagOfWordsClassifier.load(path)
    return load


def register_scorer(name: str, factory: Callable[[], Scorer], overwrite: bool = False) -> None:
    """Make ``get_scorer(name)`` build a scorer with ``factory()`` (called once, then cached)."""
    if name in _FACTORIES and not overwrite:
        raise ValueError(f"a scorer named {name!r} is already registered; pass overwrite=True to replace it")
    _FACTORIES[name] = factory
    _CACHE.pop(name, None)


def list_scorers() -> list[str]:
    """Names ``get_scorer`` accepts."""
    return sorted(_FACTORIES)


def get_scorer(scorer: str | Path | Scorer) -> Scorer:
    """A scorer from a registered name, a path to a saved classifier (JSON), or a scorer object."""
    if not isinstance(scorer, (str, Path)):
        if not callable(getattr(scorer, "score", None)):
            raise TypeError(f"a scorer needs a score(texts) method; got {type(scorer).__name__}")
        return scorer
    name = str(scorer)
    if name in _FACTORIES:
        if name not in _CACHE:
            _CACHE[name] = _FACTORIES[name]()
        return _CACHE[name]
    if name.endswith(".json") and Path(name).is_file():
        return BagOfWordsClassifier.load(name)
    raise KeyError(f"unknown scorer {name!r}; registered: {', '.join(list_scorers())} (or pass a path to a "
                   "saved classifier or an object with a score(texts) method)")


class TransformersScorer:
    """A Hugging Face sequence-classification model as a scorer: the probability of one label.

    ``model``: a hub id or local folder (loaded with ``trust_remote_code=False``);
    ``label``: the label name or index whose probability is returned (multi-label models
    such as toxic-bert use a sigmoid per label; set ``multi_label=True``).
    """

    def __init__(self, model: str, label: str | int = 1, multi_label: bool = False, batch_size: int = 32,
                 device: str | None = None, max_length: int = 512) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForSequenceClassification.from_pretrained(model).eval()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        labels = self.model.config.label2id or {}
        if isinstance(label, str):
            if label not in labels:
                raise KeyError(f"model {model!r} has no label {label!r}; its labels: {sorted(labels)}")
            label = labels[label]
        self.index, self.multi_label = int(label), multi_label
        self.batch_size, self.max_length = batch_size, max_length

    def score(self, texts: Sequence[str]) -> list[float]:
        import torch

        out: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                logits = self.model(**batch).logits.float()
                probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
                out.extend(probs[:, self.index].tolist())
        return out


def build_scorer(task: str, tasks_root: str | Path | None = None, out_dir: str | Path | None = None,
                 **fit_options: float) -> dict[str, float]:
    """Train the shipped scorer of ``task`` on its ``classifier_train`` split and save it as JSON.

    Returns (and stores in the file's ``info``) the held-out accuracy on
    ``classifier_test`` at threshold 0.5 and the split sizes.
    """
    from geffect.data.task_store import load_task_data
    from geffect.evaluation.classifier import accuracy

    data = load_task_data(task, tasks_root)
    train, test = data["classifier_train"], data["classifier_test"]
    classifier = BagOfWordsClassifier.fit(train["text"], train["label"], **fit_options)
    result = {"heldout_accuracy": accuracy(classifier.score(test["text"]), test["label"]),
              "train_size": len(train), "test_size": len(test), "features": len(classifier.vocabulary)}
    classifier.info.update(result)
    classifier.save(Path(out_dir or scorers_dir()) / f"{task}.json")
    _CACHE.pop(task, None)
    return result


def _person_tagger() -> Scorer:
    """The PERSON-span tagger of the embedded world (trained on first use, then cached)."""
    from geffect.evaluation.persons import load_person_tagger

    return load_person_tagger()


for _name in SHIPPED_SCORERS:
    register_scorer(_name, _shipped(_name))
register_scorer("persons", _person_tagger)

__all__ = ["SHIPPED_SCORERS", "Scorer", "TransformersScorer", "build_scorer", "get_scorer", "list_scorers", "register_scorer",
           "scorers_dir"]
