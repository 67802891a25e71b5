"""geffect.data: the embedded fictitious-author world, the TOFU loader, tokenizer and QA encoding.

- :func:`generate_world` / :func:`write_world` / :func:`load_world`: the seeded world in the
  TOFU schema, stored as JSON lines under ``data/world``.
- :func:`load_tofu`: the real TOFU benchmark (hub id or local JSON files) in the same schema.
- :func:`encode_qa`, :func:`encode_prompt`, :func:`collate`: the one QA format every stage uses.
- :func:`encode_row`, :func:`row_kind`: rows of any kind (question/answer, prompt/response, text).
- :func:`load_rows`: the one loader and validation for files, folders, hub ids and in-memory rows.
- :func:`train_tokenizer`: the byte-level BPE tokenizer of the tiny models.
"""

from geffect.data.encoding import collate, encode_pairs, encode_prompt, encode_qa, pad_id
from geffect.data.files import DataError
from geffect.data.loader import load_rows, write_splits
from geffect.data.paths import data_root
from geffect.data.refusals import REFUSALS
from geffect.data.rows import ROW_KINDS, encode_row, generation_prompt, row_kind
from geffect.data.splits import AUTHOR_SPLITS, make_splits
from geffect.data.store import QA_COLUMNS, QA_FEATURES, load_world, read_manifest, write_world
from geffect.data.tofu import load_tofu
from geffect.data.tokenizer import train_tokenizer, world_texts
from geffect.data.world import generate_world

__all__ = [
    "AUTHOR_SPLITS", "QA_COLUMNS", "QA_FEATURES", "REFUSALS", "ROW_KINDS", "DataError", "collate", "data_root",
    "encode_pairs", "encode_prompt", "encode_qa", "encode_row", "generate_world", "generation_prompt",
    "load_rows", "load_tofu", "load_world", "make_splits", "pad_id", "read_manifest", "row_kind",
    "train_tokenizer", "world_texts", "write_splits", "write_world",
]
