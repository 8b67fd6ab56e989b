"""The user guide's intervention snippets run unchanged but for the import path.

Step 5 ablates layer 15, head 5 and the "Causal Intervention Testing" snippet passes
``...`` for "the rest as before"; both are run as written on a random Qwen2 deep and
wide enough for layer 15 head 5 (the demo model is smaller), whose generation config
sets ``max_new_tokens`` like the demo model's, as the guide's bare ``model.generate``
needs.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
from helpers import registered_hooks, single_thread, statement

from finwidget.interventions import AttentionInterventions, HeadIntervention, InterventionSet
from finwidget.task import EarningsTask

STEP_5 = textwrap.dedent('''
    from finwidget.interpretability_tools import AttentionInterventions

    interventions = AttentionInterventions(model, tokenizer)

    # Test what happens when you ablate specific attention heads
    original_output = model.generate(input_ids, max_new_tokens=20)
    ablated_output = interventions.ablate_attention_head(
        layer_idx=15, head_idx=5, input_ids=input_ids, ablation_value=0.0
    )

    print("Effect of ablating layer 15, head 5:")
    print(f"Original: {tokenizer.decode(original_output[0])}")
    print(f"Ablated: {tokenizer.decode(ablated_output.sequences[0])}")
''')

CAUSAL_INTERVENTION_TESTING = textwrap.dedent('''
    def test_causal_intervention(interventions, base_text, intervention_specs):
        results = {}

        # Baseline prediction
        baseline = model.generate(tokenizer(base_text, return_tensors="pt").input_ids)

        for layer_idx, head_idx, intervention_type in intervention_specs:
            if intervention_type == "ablate":
                result = interventions.ablate_attention_head(layer_idx, head_idx, ...)
            elif intervention_type == "amplify":
                result = interventions.amplify_attention_head(layer_idx, head_idx, ...)

            results[(layer_idx, head_idx, intervention_type)] = result

        return results
''')


one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)

@pytest.fixture(scope="module")
def guide_model(tiny_setup):
    model, tokenizer, task = tiny_setup(seed=4, layers=16, heads=6, kv_heads=2, hidden=48)
    model.generation_config.max_new_tokens = 20
    model.generation_config.do_sample = False
    return model, tokenizer, task


def _greedy(model, input_ids, interventions, steps=20):
    """Greedy generation with ``interventions`` applied through the set's own context
    (whose decode-step exactness test_interventions checks against cache-free decoding)."""
    with interventions.applied(model):
        return model.generate(input_ids, max_new_tokens=steps, do_sample=False)


def test_step_5_runs_as_written_and_ablates_the_head(guide_model, capsys):
    model, tokenizer, task = guide_model
    hooks = registered_hooks(model)
    input_ids = tokenizer(task.prompt(statement(1, lines=2)), return_tensors="pt").input_ids
    namespace = {"model": model, "tokenizer": tokenizer, "input_ids": input_ids}
    exec(STEP_5, namespace)  # noqa: S102 - running the guide's snippet as written is the test
    printed = capsys.readouterr().out
    assert "Effect of ablating layer 15, head 5:" in printed and "Ablated: " in printed
    ablated = namespace["ablated_output"].sequences
    assert torch.equal(ablated, _greedy(model, input_ids, InterventionSet([(15, 5)])))
    assert namespace["original_output"].shape == ablated.shape
    namespace["interventions"].close()
    assert registered_hooks(model) == hooks


def test_causal_intervention_testing_runs_as_written(guide_model):
    model, tokenizer, task = guide_model
    hooks = registered_hooks(model)
    namespace = {"model": model, "tokenizer": tokenizer}
    exec(CAUSAL_INTERVENTION_TESTING, namespace)  # noqa: S102 - the guide's snippet as written
    base_text = task.prompt(statement(2, lines=2))
    with AttentionInterventions(model, tokenizer) as interventions:
        results = namespace["test_causal_intervention"](
            interventions, base_text, [(3, 1, "ablate"), (15, 0, "amplify")]
        )
    assert registered_hooks(model) == hooks
    assert set(results) == {(3, 1, "ablate"), (15, 0, "amplify")}
    prompt = tokenizer(base_text, return_tensors="pt").input_ids
    # `...` means "the prompt the model last ran on" and the guide's default factor (2)
    expected = {
        (3, 1, "ablate"): InterventionSet([(3, 1)]),
        (15, 0, "amplify"): InterventionSet([HeadIntervention(15, 0, "scale", value=2.0)]),
    }
    for key, interventions in expected.items():
        assert torch.equal(results[key].sequences, _greedy(model, prompt, interventions)), key


def test_the_method_version_and_nonzero_ablation_values(guide_model):
    model, tokenizer, task = guide_model
    base_text = task.prompt(statement(3, lines=2))
    with AttentionInterventions(model, tokenizer) as interventions:
        results = interventions.test_causal_intervention(base_text, [(2, 2, "amplify")], max_new_tokens=4)
        assert results["baseline"].sequences.shape[1] == results[(2, 2, "amplify")].sequences.shape[1]
        prompt = tokenizer(base_text, return_tensors="pt").input_ids
        constant = interventions.ablate_attention_head(4, 1, input_ids=prompt, ablation_value=0.5, max_new_tokens=4)
        expected = _greedy(model, prompt, InterventionSet([HeadIntervention(4, 1, "constant", value=0.5)]), steps=4)
        assert torch.equal(constant.sequences, expected)
        prediction = interventions.predict(statement(3, lines=2), InterventionSet([(4, 1)]))
        assert prediction.label in ("increase", "decrease")
        with pytest.raises(Exception, match="'ablate' or 'amplify'"):
            interventions.test_causal_intervention(base_text, [(0, 0, "erase")])


def test_missing_input_is_a_clear_error(guide_model):
    model, tokenizer, _ = guide_model
    with AttentionInterventions(model, tokenizer) as interventions, pytest.raises(ValueError, match="pass input_ids"):
        interventions.ablate_attention_head(0, 0)


def test_causal_intervention_testing_on_the_demo_model():
    """The guide's bare ``model.generate(input_ids)`` needs the demo model's generation
    config to set ``max_new_tokens`` (transformers' default ``max_length`` of 20 is shorter
    than any statement prompt, and generate refuses)."""
    from finwidget import load_demo_model
    from finwidget.demo import make_statements

    model, tokenizer = load_demo_model()
    assert model.generation_config.max_new_tokens is not None, (
        "finwidget/demo/model/generation_config.json must set max_new_tokens (e.g. 20) for the guide's "
        "model.generate(input_ids) to work"
    )
    namespace = {"model": model, "tokenizer": tokenizer}
    exec(CAUSAL_INTERVENTION_TESTING, namespace)  # noqa: S102 - the guide's snippet as written
    prompt = EarningsTask(tokenizer).prompt(make_statements(1, seed=4242)[0].text)
    with AttentionInterventions(model, tokenizer) as interventions:
        results = namespace["test_causal_intervention"](interventions, prompt, [(0, 1, "ablate"), (1, 3, "amplify")])
    assert {key: value.sequences.shape[0] for key, value in results.items()} == {
        (0, 1, "ablate"): 1, (1, 3, "amplify"): 1}
