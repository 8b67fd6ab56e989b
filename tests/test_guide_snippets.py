"""The user guide's snippets, run as written but for the import path.

Steps 2-4 of "Detailed Analysis Workflow" and "Attention Flow Analysis" from the guide
(``src.interpretability_tools`` -> ``finwidget.interpretability_tools``), on:

- the shipped demo model (when its weights are built),
- a random small Qwen2 with the demo tokenizer,
- a random Qwen2-shaped model with Qwen2-7B's grouped-query layout (28 query heads over
  4 key/value heads, 7 per group) at a tiny width,

everything read from the model's config, never from the guide's (wrong) 32 x 32 numbers.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "finwidget" / "demo" / "model"

# ---- the guide's text, verbatim except for the import path -------------------------------
BASIC_ANALYSIS = '''
# Import the tools
from src.interpretability_tools import AttentionHook, FinancialAttentionAnalyzer, quick_attention_analysis

# Quick analysis of a single sample
text = "Your financial statement here..."
analyzer = quick_attention_analysis(model, tokenizer, text, layer_idx=0)

# Visualize attention patterns
analyzer.plot_attention_heatmap(layer_idx=0, head_idx=0)
analyzer.plot_financial_attention_flow(layer_idx=0)
'''

STEP_2 = '''
# Analyze financial token attention
financial_tokens = analyzer.identify_financial_tokens()
print(f"Found {len(financial_tokens)} financial terms")

# Compute attention scores between financial terms
scores = analyzer.compute_financial_attention_scores()
'''

STEP_3 = '''
# Analyze what different attention heads specialize in
def analyze_head_types(analyzer, layer_idx):
    layer_name = f'layer_{layer_idx}'
    attn = analyzer.attention_weights[layer_name]
    
    for head_idx in range(attn.shape[1]):
        attention_matrix = attn[0, head_idx].numpy()
        
        # Calculate specialization metrics
        diagonal_attention = np.diag(attention_matrix).mean()
        beginning_attention = attention_matrix[:, :10].mean()
        entropy = -(attention_matrix * np.log(attention_matrix + 1e-10)).sum(axis=1).mean()
        
        print(f"Head {head_idx}: Diagonal={diagonal_attention:.3f}, "
              f"Beginning={beginning_attention:.3f}, Entropy={entropy:.3f}")
'''

STEP_4 = '''
# Analyze attention patterns for final predictions
prediction_analysis = analyzer.analyze_prediction_attention(prediction_token="increase")

# Check what the model attends to when making predictions
for layer_name, results in prediction_analysis.items():
    print(f"\\n{layer_name}:")
    print(f"  Financial attention: {results['financial_attention']['mean']:.4f}")
    print(f"  Top attended tokens: {results['top_attended_tokens'][:5]}")
'''

ATTENTION_FLOW = '''
def trace_attention_flow(analyzer, target_token_pos):
    flow = {}
    for layer_name, attn in analyzer.attention_weights.items():
        # Extract attention from target token across all layers
        attention_pattern = attn[0, :, target_token_pos, :].mean(dim=0)
        flow[layer_name] = attention_pattern
    return flow
'''


def as_finwidget(snippet: str) -> str:
    """The only change the guide's code gets: its import path."""
    return snippet.replace("from src.interpretability_tools import", "from finwidget.interpretability_tools import")


def run(snippet: str, namespace: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(as_finwidget(snippet), "<guide>", "exec"), namespace)  # noqa: S102 - the guide's own code
    return out.getvalue()


def demo_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


def build(kind: str, qwen2_config, qwen_like_tokenizer):
    if kind == "demo-model":
        from finwidget import load_demo_model

        return load_demo_model()
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    if kind == "demo-tokenizer-random-qwen2":
        tokenizer = demo_tokenizer()
        config = qwen2_config(len(tokenizer), layers=2, heads=4, kv_heads=2, head_dim=16)
    else:  # Qwen2-7B's head layout, tiny width
        tokenizer = qwen_like_tokenizer
        config = qwen2_config(len(tokenizer), layers=3, heads=28, kv_heads=4, head_dim=4)
    return Qwen2ForCausalLM(config).eval(), tokenizer


STATEMENT = (
    "Income statement\n"
    "Net income: change -1,433 | 2022: 13,937 | 2021: 15,370\n"
    "Revenue: change +5,012 | 2022: 120,456 | 2021: 115,444\n"
    "Balance sheet\n"
    "Total liabilities and equity: change +120 | 2022: 45,000 | 2021: 44,880\n"
    "Question: Will earnings increase or decrease next year?"
)

KINDS = ["demo-model", "demo-tokenizer-random-qwen2", "qwen2-7b-head-layout"]


@pytest.fixture(scope="module", params=KINDS)
def model_and_tokenizer(request, qwen2_config, qwen_like_tokenizer):
    return build(request.param, qwen2_config, qwen_like_tokenizer)


def test_guide_steps_2_to_4_and_attention_flow(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    config = model.config
    namespace = {"model": model, "tokenizer": tokenizer, "np": np, "torch": torch}

    # Step "Basic Attention Analysis", with the guide's placeholder text as written
    run(BASIC_ANALYSIS, namespace)
    analyzer = namespace["analyzer"]
    assert analyzer.num_layers == config.num_hidden_layers and analyzer.num_heads == config.num_attention_heads

    # ... and with a real statement, the rest of the steps
    from finwidget.interpretability_tools import quick_attention_analysis

    namespace["analyzer"] = analyzer = quick_attention_analysis(model, tokenizer, STATEMENT, layer_idx=0)
    printed = run(STEP_2, namespace)
    assert printed.startswith("Found ") and "financial terms" in printed
    assert {s.text for s in namespace["financial_tokens"]} >= {"Net income", "Revenue", "Total liabilities and equity"}
    assert set(namespace["scores"]["layer"]) == set(range(config.num_hidden_layers))

    run(STEP_3, namespace)
    printed = run("analyze_head_types(analyzer, 0)", namespace)
    lines = [line for line in printed.splitlines() if line.startswith("Head ")]
    assert len(lines) == config.num_attention_heads  # the model's heads, not the guide's 32

    printed = run(STEP_4, namespace)
    results = namespace["prediction_analysis"]
    assert list(results) == [f"layer_{i}" for i in range(config.num_hidden_layers)]
    for layer_name, entry in results.items():
        assert 0.0 <= entry["financial_attention"]["mean"] <= 1.0
        top = [text for text, _ in entry["top_attended_tokens"][:5]]
        assert len(top) == 5
        # readable spans, never a lone digit of a longer number
        assert all(not (t.isdigit() and len(t) == 1) for t in top), top
    assert "Top attended tokens: [(" in printed

    run(ATTENTION_FLOW, namespace)
    n = analyzer.layout.num_tokens
    flow = namespace["trace_attention_flow"](analyzer, n - 1)
    assert list(flow) == [f"layer_{i}" for i in range(config.num_hidden_layers)]
    for layer_name, pattern in flow.items():
        assert tuple(pattern.shape) == (n,)
        # a head-mean of float32 probability rows: within n ulps of 1.0
        assert float(pattern.sum()) == pytest.approx(1.0, abs=n * torch.finfo(torch.float32).eps)
    # the library's own flow gives the same rows, as a method and as the guide's function name
    from finwidget.interpretability_tools import trace_attention_flow

    own = analyzer.trace_attention_flow(n - 1)
    same_name = trace_attention_flow(analyzer, n - 1)
    for layer_name in flow:
        # the same recorded rows averaged over heads in another order: a few ulps of 1.0
        rounding = model.config.num_attention_heads * torch.finfo(torch.float32).eps
        torch.testing.assert_close(own[layer_name].float(), flow[layer_name].float(), atol=rounding, rtol=0)
        torch.testing.assert_close(same_name[layer_name].float(), flow[layer_name].float(), atol=rounding, rtol=0)


def test_guide_attention_weights_are_computed_lazily(model_and_tokenizer):
    """``attention_weights['layer_i']`` answers ``.shape`` without computing, and one head
    at a time when indexed, as the guide's loops use it."""
    model, tokenizer = model_and_tokenizer
    from finwidget.interpretability_tools import quick_attention_analysis

    analyzer = quick_attention_analysis(model, tokenizer, STATEMENT)
    attn = analyzer.attention_weights["layer_0"]
    n = analyzer.layout.num_tokens
    assert tuple(attn.shape) == (1, model.config.num_attention_heads, n, n)
    head = attn[0, 1].numpy()
    assert head.shape == (n, n)
    np.testing.assert_allclose(head.sum(-1), np.ones(n), rtol=0, atol=n * np.finfo(np.float32).eps)
    assert np.allclose(np.triu(head, 1), 0.0)  # causal
