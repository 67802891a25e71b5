"""Training batches: seeded order, epochs, shards, forget views, probes."""

from __future__ import annotations

import pytest
import torch
from test_training_support import world_tokenizer

from geffect.data import REFUSALS, collate, encode_qa
from geffect.data.sampling import sample_indices
from geffect.errors import InputError
from geffect.tasks import Task, TaskData
from geffect.training.config import ConfigError
from geffect.training.data import BatchStream, UnlearningData, shard


@pytest.fixture(scope="module")
def data():
    return UnlearningData(world_tokenizer(), TaskData(), "forget01", "retain99", views=["idk", "mismatch"],
                          seed=3, batch_size=6)


def test_stream_covers_each_epoch_once_and_is_deterministic():
    stream = BatchStream(size=10, batch_size=4, seed=1, stream="forget")
    drawn = [i for d in range(5) for i in stream.indices(d)]  # 20 positions = 2 epochs
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))
    assert drawn[:10] != drawn[10:]  # a new permutation per epoch
    again = BatchStream(size=10, batch_size=4, seed=1, stream="forget")
    assert [again.indices(d) for d in (4, 0, 2)] == [stream.indices(d) for d in (4, 0, 2)]  # any order
    assert BatchStream(10, 4, 2, "forget").indices(0) != stream.indices(0)  # the seed matters


def test_shards_partition_a_batch():
    items = list(range(7))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 1], [2, 3], [4, 5, 6]]


def test_forget_batch_content_matches_encoding(data):
    batch = data.forget_batch(0)
    indices = data.forget.indices(0)
    rows = [data.forget_rows[i] for i in indices]
    expected = collate([encode_qa(world_tokenizer(), r["question"], r["answer"]) for r in rows], world_tokenizer())
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(batch[key], expected[key])
    assert batch["input_ids"].shape[0] == 6


def test_views_keep_the_question_and_draw_seeded_answers(data):
    batch = data.forget_batch(1)
    tok = world_tokenizer()
    rows = [data.forget_rows[i] for i in data.forget.indices(1)]
    retain_answers = {r["answer"] for r in data.retain_rows}
    for view, pool in (("idk", set(REFUSALS)), ("mismatch", retain_answers)):
        nested = batch[view]
        assert nested["input_ids"].shape[0] == 6
        for j, row in enumerate(rows):
            text = tok.decode(nested["input_ids"][j][nested["attention_mask"][j].bool()], skip_special_tokens=True)
            question_part, _, answer = text.partition("\nAnswer: ")
            assert question_part == f"Question: {row['question']}"
            assert answer in pool
    again = UnlearningData(tok, TaskData(), "forget01", "retain99", views=["idk", "mismatch"], seed=3, batch_size=6)
    assert torch.equal(again.forget_batch(1)["mismatch"]["input_ids"], batch["mismatch"]["input_ids"])
    answers = [tok.decode(batch["idk"]["input_ids"][j], skip_special_tokens=True) for j in range(6)]
    assert len(set(answers)) > 1  # refusals vary across examples


def test_sharded_batches_concatenate_to_the_full_batch(data):
    full = data.forget_batch(2)
    halves = [data.forget_batch(2, rank, 2) for rank in range(2)]
    assert sum(h["input_ids"].shape[0] for h in halves) == 6
    first = halves[0]["idk"]["input_ids"]
    assert torch.equal(first, full["idk"]["input_ids"][:3, : first.shape[1]])
    retain = [data.retain_batch(2, rank, 2) for rank in range(2)]
    assert torch.equal(retain[1]["labels"], data.retain_batch(2)["labels"][3:, : retain[1]["labels"].shape[1]])


def test_probes_are_seeded_and_sorted(data):
    probe = data.probe("forget", "forget01", 8)
    assert probe.indices == sorted(probe.indices) and len(set(probe.indices)) == 8
    assert probe.indices == sample_indices(20, 8, 3, "forget")
    assert probe.rows[0] == data.forget_rows[probe.indices[0]]
    assert data.probe("whole", "forget01", None).indices == list(range(20))
    parts = [probe.subset(r, 3) for r in range(3)]
    assert sum((p.indices for p in parts), []) == probe.indices
    assert torch.equal(torch.cat([p.batch["labels"] for p in parts]), probe.batch["labels"])


def test_missing_split_and_unknown_view_are_clear():
    with pytest.raises(InputError, match="no split 'forget11'"):
        TaskData().split("forget11")
    with pytest.raises(ConfigError, match=r"unknown forget view\(s\) \['refusal'\]"):
        UnlearningData(world_tokenizer(), TaskData(), "forget01", None, views=["refusal"])


def test_views_and_pools_on_prompt_rows():
    chat = [{"prompt": f"Ask {i}:", "response": f" reply {i}"} for i in range(6)]
    normal = [{"text": f"normal line {i}"} for i in range(4)]
    task = Task(name="chatty", description="", forget="chat", splits={"chat": chat, "normal": normal},
                pools={"mismatch": "normal"})
    tok = world_tokenizer()
    data = UnlearningData(tok, TaskData(task), "chat", None, views=["idk", "mismatch"], seed=1, batch_size=3)
    batch = data.forget_batch(0)
    rows = [data.forget_rows[i] for i in data.forget.indices(0)]
    for j, row in enumerate(rows):
        idk = tok.decode(batch["idk"]["input_ids"][j][batch["idk"]["attention_mask"][j].bool()],
                         skip_special_tokens=True)
        mismatch = tok.decode(batch["mismatch"]["input_ids"][j][batch["mismatch"]["attention_mask"][j].bool()],
                              skip_special_tokens=True)
        assert idk.startswith(row["prompt"]) and idk[len(row["prompt"]):] in REFUSALS  # world refusals by default
        assert mismatch[len(row["prompt"]):] in {r["text"] for r in normal}  # the task's mismatch pool


def test_rmu_answer_positions_on_text_rows_are_every_position_that_predicts_a_text_token():
    from geffect.data import encode_row
    from geffect.objectives.representation import token_positions

    tok = world_tokenizer()
    rows = [{"text": "a short passage"}, {"text": "a somewhat longer passage of text here"}]
    batch = collate([encode_row(tok, r) for r in rows], tok)
    mask = token_positions(batch, "answer", torch.device("cpu"))
    lengths = batch["attention_mask"].sum(1)
    for i, n in enumerate(lengths.tolist()):  # BOS .. second-to-last token predict text tokens; the last does not
        assert mask[i].tolist() == [True] * (n - 1) + [False] * (mask.shape[1] - n + 1)


def test_a_text_row_with_no_token_to_learn_fails_in_setup_naming_split_and_row():
    import copy

    from geffect.data import DataError

    plain = copy.deepcopy(world_tokenizer())
    plain.add_bos_token = False  # nothing predicts a text's first token
    rows = [{"text": "the river ran"}, {"text": "the"}, {"text": "the mill turned"}]
    task = Task(name="short_texts", description="", forget="keep", splits={"keep": rows[::2], "short": rows})
    with pytest.raises(DataError, match=r"^short, row 2: text row 'the' leaves no token to learn"):
        UnlearningData(plain, TaskData(task), "keep", "short")
    with pytest.raises(DataError, match=r"^short, row 2: "):
        UnlearningData(plain, TaskData(task), "short", None)
    assert len(UnlearningData(plain, TaskData(task), "keep", None).forget_rows) == 2
    held = TaskData(task, holdout=0.34, seed=3, heldout={"short": "forget"})
    assert held.heldout_ids("short") == [1]  # the short row is held out: it is still checked
    with pytest.raises(DataError, match=r"^short, row 2: "):
        UnlearningData(plain, held, "short", None)
