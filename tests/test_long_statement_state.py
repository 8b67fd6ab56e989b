"""A 4,096-token statement: the explorer's saved widget state stays under 2 MB."""

from __future__ import annotations

import json

from finwidget.demo import make_statements
from finwidget.task import EarningsTask


def test_saved_state_of_a_4096_token_statement_is_under_2_mb(demo, peaky_qwen2):
    from ipywidgets.embed import dependency_state, embed_data

    from finwidget.widgets import AttentionExplorer

    _, tokenizer, _ = demo
    task = EarningsTask(tokenizer)
    lines = [line for s in make_statements(120, seed=11) for line in s.text.split("\n")[:-1]]
    lo, hi = 1, len(lines)
    while lo < hi:  # the fewest lines whose prompt has 4,096 tokens
        mid = (lo + hi) // 2
        if len(task.encode("\n".join(lines[:mid]))["input_ids"][0]) < 4096:
            lo = mid + 1
        else:
            hi = mid
    text = "\n".join(lines[:lo])
    model = peaky_qwen2(vocab_size=len(tokenizer), layers=2, heads=4, kv_heads=2, max_positions=8192)
    widget = AttentionExplorer(model, tokenizer, text, task=task)
    assert widget.session.seq_len >= 4096
    saved = embed_data(views=[widget], state=dependency_state([widget]))["manager_state"]
    size = len(json.dumps(saved).encode("utf-8"))
    print(f"saved widget state at T={widget.session.seq_len}: {size / 1e6:.3f} MB")
    assert size < 2_000_000
    # what grows with T is the statement's layout (tokens and spans), not attention
    assert widget.state_size() < 200 * widget.session.seq_len
