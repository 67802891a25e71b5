"""Row kinds and encode_row: labels exactly on the answer / response / every text token."""

from __future__ import annotations

import copy

import pytest
from test_training_support import world_tokenizer

from geffect.data import encode_qa, encode_row, generation_prompt, row_kind
from geffect.data.files import DataError
from geffect.data.rows import RowKindError, target_text
from geffect.schema import IGNORE_INDEX

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer()


def labelled(enc):
    return [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX]


def test_row_kind_by_columns():
    assert row_kind(["question", "answer", "author"]) == "qa"
    assert row_kind(["prompt", "response"]) == "prompt"
    assert row_kind(["text", "source"]) == "text"
    assert row_kind(["question"]) == "qa"  # a half-present kind is that kind (its missing field is reported)
    with pytest.raises(RowKindError, match=r"no recognised row kind in columns \['body', 'title'\]"):
        row_kind(["title", "body"])


def test_target_text_is_the_labelled_field_of_each_kind():
    assert target_text({"question": "Q?", "answer": "A.", "paraphrased_answer": "B."}) == "A."
    assert target_text({"prompt": "P", "response": "R", "text": "T"}) == "R"  # kinds in ROW_KINDS order
    assert target_text({"text": "T", "source": "S"}) == "T"
    with pytest.raises(RowKindError):
        target_text({"title": "x"})


def test_qa_rows_encode_exactly_as_encode_qa(tok):
    row = {"question": "Who wrote it?", "answer": "Nobody did.", "author": 3}
    assert encode_row(tok, row) == encode_qa(tok, row["question"], row["answer"])


def test_prompt_rows_label_the_response_and_eos_only(tok):
    row = {"prompt": "Tell me a story:", "response": " Once upon a time."}
    enc = encode_row(tok, row)
    prompt_ids = tok("Tell me a story:")["input_ids"]  # BOS + prompt, no template
    assert enc["input_ids"][: len(prompt_ids)] == prompt_ids
    assert enc["labels"][: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    target = labelled(enc)
    assert target[-1] == tok.eos_token_id
    assert tok.decode(target[:-1]) == " Once upon a time."
    assert "Question" not in tok.decode(enc["input_ids"])
    assert len(enc["attention_mask"]) == len(enc["input_ids"]) == len(enc["labels"])


def test_prompt_rows_use_the_chat_template_when_there_is_one(tok):
    chat = copy.deepcopy(tok)
    chat.chat_template = CHAT_TEMPLATE
    enc = encode_row(chat, {"prompt": "Hi", "response": "Hello there"})
    text = chat.decode(enc["input_ids"])
    assert "<|user|>Hi" in text and "<|assistant|>" in text
    assert chat.decode(labelled(enc)[:-1]) == "Hello there"


def test_text_rows_label_every_text_token_and_not_bos(tok):
    text = "The river ran past the mill, and the mill turned."
    enc = encode_row(tok, {"text": text})
    plain = tok(text, add_special_tokens=False)["input_ids"]
    assert enc["input_ids"] == [tok.bos_token_id] + plain  # no EOS: a passage is not a finished turn
    assert enc["labels"] == [IGNORE_INDEX] + plain


def test_max_length_cuts_the_target_end_and_never_the_prompt(tok):
    row = {"prompt": "Continue:", "response": " one two three four five six seven eight nine ten"}
    full = encode_row(tok, row)
    prompt_len = full["labels"].index(next(x for x in full["labels"] if x != IGNORE_INDEX))
    cut = encode_row(tok, row, max_length=prompt_len + 3)
    assert len(cut["input_ids"]) == prompt_len + 3 and cut["input_ids"] == full["input_ids"][: prompt_len + 3]
    text = encode_row(tok, {"text": "alpha beta gamma delta epsilon"}, max_length=4)
    assert len(text["input_ids"]) == 4 and text["labels"][1:] == text["input_ids"][1:]
    with pytest.raises(ValueError, match="does not fit max_length=2"):
        encode_row(tok, row, max_length=2)


def test_generation_prompts_per_kind(tok):
    ids, ref = generation_prompt(tok, {"question": "Q?", "answer": "A."})
    assert ref == "A." and tok.decode(ids).endswith("Answer:")
    ids, ref = generation_prompt(tok, {"prompt": "Say hi:", "response": " hi"})
    assert ids == tok("Say hi:")["input_ids"] and ref == " hi"
    text = "one two three four five six"
    ids, ref = generation_prompt(tok, {"text": text})
    whole = tok(text)["input_ids"]
    assert whole[: len(ids)] == ids and 1 < len(ids) < len(whole)
    assert (tok.decode(ids, skip_special_tokens=True) + " " + ref).split() == text.split()



def test_a_row_with_no_predicted_label_is_refused_in_one_line(tok):
    plain = copy.deepcopy(tok)
    plain.add_bos_token = False  # GPT-2-style: no BOS, so nothing predicts a text's first token
    assert len(plain("the")["input_ids"]) == 1
    with pytest.raises(DataError, match=r"^text row 'the' leaves no token to learn: .*a text row needs two tokens"):
        encode_row(plain, {"text": "the"})
    assert labelled(encode_row(tok, {"text": "the"})) == tok("the", add_special_tokens=False)["input_ids"]  # BOS
    two = encode_row(plain, {"text": "the river"})
    assert two["labels"] == two["input_ids"] and len(two["input_ids"]) >= 2
