"""finwidget: see and change what happens inside a language model that reads financial statements.

Names are imported lazily, so ``import finwidget`` stays fast and pulls in
torch/transformers only when a model-facing name is first used.
"""

from finwidget.lazy_names import lazy_getattr

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_model": "finwidget.loading",
    "load_demo_model": "finwidget.demo",
    "EarningsTask": "finwidget.task",
    "TwoAnswerTask": "finwidget.task",
    "Prediction": "finwidget.task",
    "predict": "finwidget.task",
    # capture: attention recorded without the eager path
    "capture_attention": "finwidget.capture",
    "AttentionCapture": "finwidget.capture",
    "AttentionHook": "finwidget.capture",
    # reading the statement
    "read_statement": "finwidget.statement",
    "Lexicon": "finwidget.statement",
    # counterfactual statements: edited numbers, written consistently
    "counterfactual": "finwidget.statement.edits",
    "counterfactual_family": "finwidget.statement.edits",
    "SetNumber": "finwidget.statement.edits",
    "SetValue": "finwidget.statement.edits",
    "SetChange": "finwidget.statement.edits",
    "Scale": "finwidget.statement.edits",
    "FlipChange": "finwidget.statement.edits",
    "SwapYears": "finwidget.statement.edits",
    "span_patching": "finwidget.counterfactuals",
    "family_effects": "finwidget.counterfactuals",
    "sensitivity": "finwidget.counterfactuals",
    "plot_sensitivity": "finwidget.widgets.sensitivity_plot",
    # analysis tables
    "FinancialAttentionAnalyzer": "finwidget.interpretability_tools",  # the guide's: plots return widgets
    "quick_attention_analysis": "finwidget.interpretability_tools",
    "head_specialization": "finwidget.analysis",
    "prediction_attention": "finwidget.analysis",
    "financial_clustering": "finwidget.analysis",
    "trace_attention_flow": "finwidget.analysis",
    "attention_rollout": "finwidget.analysis",
    "decision_pathway": "finwidget.analysis",
    "logit_lens": "finwidget.analysis",
    "head_direct_contributions": "finwidget.analysis",
    # interventions
    "HeadIntervention": "finwidget.interventions",
    "InterventionSet": "finwidget.interventions",
    "CachedRun": "finwidget.interventions",
    "sweep_heads": "finwidget.interventions",
    "attribution_patching": "finwidget.interventions",
    "activation_patching": "finwidget.interventions",
    "attention_gradients": "finwidget.interventions",
    "AttentionInterventions": "finwidget.interventions",
    # circuits
    "find_circuit": "finwidget.circuits",
    "CircuitGraph": "finwidget.circuits",
    # populations of statements
    "compare_models": "finwidget.population",
    # widgets
    "AttentionExplorer": "finwidget.widgets",
}

__all__ = [*sorted(_EXPORTS), "__version__"]  # noqa: PLE0604 - the keys of _EXPORTS are str


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__():
    return __all__
