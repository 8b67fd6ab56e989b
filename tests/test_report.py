"""``finwidget report``: the analysis page (prediction, sweep table, top heads and the
line items they read, summary, every head's data embedded up to a limit)."""

import base64
import json
import re

import numpy as np
import pytest

import finwidget
from finwidget.analysis.line_items import line_item_attention, line_item_tokens
from finwidget.cli import main
from finwidget.demo import make_statements
from finwidget.interventions.sweep import summarize_sweep, sweep_heads
from finwidget.task import EarningsTask
from finwidget.widgets.protocol import request_key
from finwidget.widgets.report import write_report


@pytest.fixture(scope="module")
def demo():
    return finwidget.load_demo_model()


def embedded_state(page: str) -> dict:
    raw = re.search(r'<script type="application/json" id="fw-state">(.*?)</script>', page, re.DOTALL).group(1)
    return json.loads(raw)


def test_line_item_attention_sums_each_line_items_tokens(demo):
    from finwidget.statement import read_statement

    _, tokenizer = demo
    text = make_statements(1, seed=4)[0].text
    task = EarningsTask(tokenizer)
    batch = task.encode(text)
    layout = read_statement(text, tokenizer, input_ids=batch["input_ids"][0].tolist(), task=task)
    row = np.random.default_rng(0).random(layout.num_tokens)
    frame = line_item_attention(row, layout)
    tokens = line_item_tokens(layout)
    assert set(frame["line_item"]) == {item.name for item in layout.line_items}
    for name, mass in zip(frame["line_item"], frame["attention"]):
        assert mass == pytest.approx(row[tokens[name]].sum())
        item = next(i for i in layout.line_items if i.name == name)
        # exactly the tokens of the spans on the item's line
        on_line = [t for s in layout.spans if s.line == item.line for t in range(s.token_start, s.token_end)]
        assert sorted(tokens[name].tolist()) == sorted(on_line) and len(on_line) > 0
    assert list(frame["attention"]) == sorted(frame["attention"], reverse=True)


def test_the_report_is_an_analysis_page(demo, tmp_path):
    model, tokenizer = demo
    texts = [s.text for s in make_statements(3, seed=7)]
    path = write_report(model, tokenizer, texts, tmp_path / "report.html")
    page = path.read_text(encoding="utf-8")
    state = embedded_state(page)

    # The sweep table is the Python API's sweep over the same statements, summarized.
    api = summarize_sweep(sweep_heads(model, EarningsTask(tokenizer), texts, progress=False, batch_size=1))
    table = re.search(r'data-testid="sweep-table">.*?<tbody>(.*?)</tbody>', page, re.DOTALL).group(1)
    first_row = re.findall(r"<td>(.*?)</td>", table.split("</tr>")[0])
    assert (int(first_row[0]), int(first_row[1])) == (int(api["layer"][0]), int(api["head"][0]))
    assert float(first_row[3]) == pytest.approx(api["mean_abs_change"][0], abs=5e-4)

    # The explorer is focused on the sweep's top head (not L0H0) and its grid shows the sweep.
    top = (int(api["layer"][0]), int(api["head"][0]))
    assert top != (0, 0)
    assert state["traits"]["focus"] == {"layer": top[0], "head": top[1]}
    assert state["traits"]["grid_measure"] == "mean_abs_change"

    # Top heads, each with the line items its answer position reads in the statement shown.
    heads = re.findall(r'data-testid="top-head" data-layer="(\d+)" data-head="(\d+)"', page)
    assert [(int(a), int(b)) for a, b in heads] == [tuple(map(int, r)) for r in api[["layer", "head"]].head(3).values]
    assert len(re.findall(r"<li data-line-item=", page)) == 9
    assert "data-testid=\"report-summary\"" in page and "matters most" in page
    assert "data-testid=\"report-prediction\"" in page

    # Every head's matrix is embedded, so focusing works offline, and the page says so.
    keys = {r["key"] for r in state["replies"]}
    for layer in range(2):
        for head in range(4):
            assert request_key({"kind": "head_matrix", "layer": layer, "head": head}) in keys
    assert "Every head&#x27;s data is embedded (8 of 8 heads" in page


def test_the_embedding_stops_at_its_size_limit_and_says_so(demo, tmp_path):
    model, tokenizer = demo
    path = write_report(model, tokenizer, [make_statements(1, seed=7)[0].text], tmp_path / "small.html",
                        max_bytes=1)
    page = path.read_text(encoding="utf-8")
    state = embedded_state(page)
    matrices = [r for r in state["replies"] if r["reply"]["request"] == "head_matrix"]
    assert len(matrices) == 1  # only the focused head
    assert "The data of 1 of 8 heads is embedded" in page
    assert base64.b64decode(matrices[0]["buffers"][0])


def test_the_cli_writes_the_report(tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["report", "--demo", "--statements", "2", str(out)]) == 0
    assert out.exists() and "data-testid=\"sweep-table\"" in out.read_text(encoding="utf-8")
    assert main(["report", "--demo", "--statements", "0", str(tmp_path / "x.html")]) == 2
    assert "--statements must be at least 1" in capsys.readouterr().err
