"""Tokenizers for the statement and analysis tests, built offline.

``qwen_like_tokenizer()`` is transformers' own ``Qwen2Tokenizer`` class with a small
byte-level BPE vocabulary trained here on financial text: the same pre-tokenizer
regex as Qwen2 (every digit its own token, the space before a number its own token),
so offsets and token boundaries behave as with Qwen2-7B's tokenizer.
"""

from __future__ import annotations

import json
from functools import lru_cache

TRAINING_TEXT = [
    "Net income: change -1,433 | 2022: 13,937 | 2021: 15,370",
    "Operating cash flow: change +2,210 | 2022: 9,876 | 2021: 7,666",
    "Revenue: change 5,012 | 2022: 120,456 | 2021: 115,444",
    "Total liabilities and equity 45,000 40,000",
    "Total assets, Total current assets, Accounts receivable, Inventory, Goodwill",
    "Diluted earnings per share $ (2.15) $ 1.73",
    "(in millions, except per share data) Fiscal year ended December 31, 2023 2022",
    "Revenue grew 12.5% to $(1,234.5) million in 2023 <script>alert('x')</script>",
    "Gross margin ratio, return on equity, capital expenditures, dividends paid",
    "Question: Will earnings increase or decrease next year?\nAnswer: increase",
    "Answer: decrease",
]


@lru_cache(maxsize=1)
def qwen_like_tokenizer(vocab_size: int = 420):
    """A ``Qwen2Tokenizer`` (fast) with a small trained vocabulary."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    trainer_model = Tokenizer(models.BPE())
    trainer_model.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        show_progress=False,
    )
    trainer_model.train_from_iterator(TRAINING_TEXT * 20, trainer)
    state = json.loads(trainer_model.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=state["vocab"], merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tokenizer
