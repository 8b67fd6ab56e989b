"""The README's tour of the UI, performed as a newcomer would, in JupyterLab 4 and Notebook 7.

Starting from the explorer on a list of demo statements, only UI actions: sweep every
head over every statement, read the grid for the heads that matter, focus the top
last-layer head and read (statement by statement, with "next") which lines the last
layer reads at the answer position, then ablate the top head and watch the answers.
Every assertion is about what the page shows; the expectations are the model card's
planted rule (finwidget/demo/model/MODEL_CARD.md): answers read "Net income" and
"Operating cash flow", and layer 0 head 1 is the head whose ablation breaks "increase".
"""

from __future__ import annotations

from analysis_page import AnalysisPage
from browser_harness import NotebookDriver, write_notebook

RULE_LINES = {"Net income", "Operating cash flow"}
N_STATEMENTS = 6
SEED = 21  # the README's tour uses the same statements


def test_the_readme_tour_finds_the_planted_rule(notebook_dir, page, artifacts):
    server, folder, name = notebook_dir
    page, watch = page
    write_notebook(
        folder / "tour.ipynb",
        [
            "import finwidget\nmodel, tokenizer = finwidget.load_demo_model()",
            (
                "from finwidget.demo import make_statements\n"
                "from finwidget.widgets import AttentionExplorer\n"
                f"explorer = AttentionExplorer(model, tokenizer, make_statements({N_STATEMENTS}, seed={SEED}))\n"
                "explorer"
            ),
        ],
    )
    driver = NotebookDriver(page, server)
    driver.open(f"{name}/tour.ipynb")
    loaded = watch.snapshot()
    driver.run_all()
    explorer = AnalysisPage(page)
    driver.wait_until(explorer.is_ready, timeout=240, what="the explorer's first draw")
    driver.wait_all_executed(timeout=240)
    assert explorer.text("statement-position") == f"1 of {N_STATEMENTS}"

    # 1. Sweep every head over every statement: the grid shows mean |change| per head.
    grid = explorer.sweep_all()
    artifacts.shot(page, "1-swept")
    ranked = sorted(grid, key=lambda k: -grid[k])
    assert ranked[0] == (0, 1), f"the grid's top head is {ranked[0]}, not the model card's L0H1: {grid}"
    last_layer = max(layer for layer, _ in grid)
    top_last = max((k for k in grid if k[0] == last_layer), key=lambda k: grid[k])

    # 2. Focus the top head of the last layer and read what the whole layer reads at the
    #    answer position, statement by statement.
    explorer.focus_head(*top_last)
    explorer.set_select("statement-heads", "layer")
    explorer.wait_statement_values()
    totals: dict[str, float] = {}
    for index in range(N_STATEMENTS):
        if index:
            explorer.go_to_statement("statement-next", index)
        for line, value in explorer.line_values().items():
            totals[line] = totals.get(line, 0.0) + value / N_STATEMENTS
    artifacts.shot(page, "2-last-layer-reads")
    read = sorted(totals, key=lambda k: -totals[k])
    # The two rule lines are among the three lines the last layer reads most. (The third,
    # "Operating income", shares its first word with "Operating cash flow": attention alone
    # does not single out the rule; the ablation below is the causal test.)
    assert RULE_LINES <= set(read[:3]), f"the last layer reads {[(k, round(totals[k], 3)) for k in read[:4]]}"

    # 3. Ablate the top head (shift+click), then walk the statements: "increase" answers
    #    turn to "decrease", and the ablation stays while moving between statements.
    explorer.go_to_statement("statement-prev", N_STATEMENTS - 2)
    explorer.toggle_ablation(0, 1, ablated_after=True)
    answers = []
    for index in range(N_STATEMENTS - 2, -1, -1):
        if index != N_STATEMENTS - 2:
            explorer.go_to_statement("statement-prev", index)
        explorer._wait(
            "const p = root.querySelector('[data-testid=prediction-panel]');"
            " return p.getAttribute('data-pending') !== '1' && root.getAttribute('data-finwidget-busy') !== '1';"
        )
        shown = explorer.prediction()
        assert [0, 1, "zero"] in shown["ablated"], shown
        answers.append((shown["clean"], shown["value"]))
    artifacts.shot(page, "3-ablated")
    flipped = [(clean, value) for clean, value in answers if (clean > 0) != (value > 0)]
    assert flipped, f"ablating L0H1 flipped no answer: {answers}"
    assert all(clean > 0 and value < 0 for clean, value in flipped), answers  # increase -> decrease

    # 4. The ablated run of the last layer, labelled as such.
    explorer.set_select("attention-run", "ablated")
    explorer.wait_run_label("ablated run (L0H1 zero)")
    artifacts.shot(page, "4-ablated-run")
    assert watch.problems_since(loaded) == [], watch.summary()
