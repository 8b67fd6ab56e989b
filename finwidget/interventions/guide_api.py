"""The user guide's ``AttentionInterventions`` class, done with finwidget's interventions.

The guide (step 5 and "Causal Intervention Testing") calls::

    interventions = AttentionInterventions(model, tokenizer)
    ablated = interventions.ablate_attention_head(layer_idx=15, head_idx=5, input_ids=input_ids,
                                                  ablation_value=0.0)
    ablated.sequences[0]
    interventions.ablate_attention_head(layer_idx, head_idx, ...)
    interventions.amplify_attention_head(layer_idx, head_idx, ...)

Both methods generate with the head changed at every position (prompt and generated
tokens) and return ``generate``'s output with ``.sequences``. In the guide's snippets
``...`` stands for "the rest as before": an argument given as ``...`` (or left out) takes
its default, and a missing ``input_ids`` means the prompt of the model's most recent
run (this object remembers it with a small forward pre-hook on the decoder stack,
removed by :meth:`AttentionInterventions.close`, at the end of a ``with`` block, or when
the object is garbage collected).
"""

from __future__ import annotations

import weakref

import torch

from finwidget.errors import InputError
from finwidget.interventions.applying import apply_interventions
from finwidget.interventions.head_outputs import check_token_ids
from finwidget.interventions.spec import HeadIntervention, InterventionSet
from finwidget.model_parts import decoder_stack
from finwidget.task import EarningsTask, Prediction, eval_mode, model_device

DEFAULT_NEW_TOKENS = 20
DEFAULT_AMPLIFICATION = 2.0


class _PromptMemory:
    """Remembers the prompt (first, cache-free call) of the model's most recent run."""

    def __init__(self):
        self.input_ids: torch.Tensor | None = None
        self.attention_mask: torch.Tensor | None = None

    def __call__(self, module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() > 0:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(input_ids, torch.Tensor):
            self.input_ids = input_ids.detach()
            mask = kwargs.get("attention_mask")
            self.attention_mask = mask.detach() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        return


def _is_default(value) -> bool:
    return value is None or value is Ellipsis


def _check_specs(specs) -> list[tuple]:
    """The guide's ``(layer, head, "ablate" | "amplify")`` specs, each checked (types and kind)."""
    if isinstance(specs, (str, bytes, dict)) or not hasattr(specs, "__iter__"):
        raise InputError(f"intervention_specs must be a list of (layer, head, 'ablate' | 'amplify'), "
                         f"got {type(specs).__name__}")
    checked = []
    for spec in specs:
        try:
            layer, head, kind = spec
        except (TypeError, ValueError):
            raise InputError(f"each spec must be (layer, head, 'ablate' | 'amplify'), got {str(spec)[:80]}") from None
        if kind not in ("ablate", "amplify"):
            raise InputError(f"unknown intervention type {str(kind)[:80]!r} in {str(spec)[:80]}; use 'ablate' or 'amplify'")
        HeadIntervention(layer, head)  # layer and head types
        checked.append((layer, head, kind))
    return checked


class AttentionInterventions:
    """Ablate or amplify attention heads while generating (the guide's API).

    Args:
        model: a Hugging Face causal LM.
        tokenizer: its tokenizer.
        task: an :class:`~finwidget.task.EarningsTask` for :meth:`predict` (default: built
            from ``tokenizer``).
    """

    def __init__(self, model, tokenizer, task: EarningsTask | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self._task = task
        self._memory = _PromptMemory()
        handle = decoder_stack(model).register_forward_pre_hook(self._memory, with_kwargs=True)
        self._finalizer = weakref.finalize(self, handle.remove)

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Stop remembering prompts (removes the one hook this object keeps)."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def task(self) -> EarningsTask:
        if self._task is None:
            self._task = EarningsTask(self.tokenizer)
        return self._task

    # ------------------------------------------------------------ inputs
    def _inputs(self, input_ids) -> dict[str, torch.Tensor]:
        device = model_device(self.model)
        attention_mask = None
        if _is_default(input_ids):
            if self._memory.input_ids is None:
                raise InputError(
                    "no input_ids given and the model has not run on a prompt since this AttentionInterventions "
                    "was created; pass input_ids=..."
                )
            input_ids, attention_mask = self._memory.input_ids, self._memory.attention_mask
        elif isinstance(input_ids, str):
            encoded = self.tokenizer(input_ids, return_tensors="pt")
            input_ids, attention_mask = encoded["input_ids"], encoded.get("attention_mask")
        elif isinstance(input_ids, dict) or hasattr(input_ids, "keys"):
            input_ids, attention_mask = input_ids["input_ids"], input_ids.get("attention_mask")
        if not isinstance(input_ids, torch.Tensor):
            input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.dim() != 2 or input_ids.numel() == 0:
            raise InputError(f"input_ids must be a non-empty [batch, tokens] tensor, got shape {tuple(input_ids.shape)}")
        check_token_ids(self.model, input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}

    def _generate_kwargs(self, generate_kwargs: dict) -> dict:
        kwargs = dict(generate_kwargs)
        kwargs["return_dict_in_generate"] = True
        config = getattr(self.model, "generation_config", None)
        has_length = any(k in kwargs for k in ("max_new_tokens", "max_length"))
        if not has_length and getattr(config, "max_new_tokens", None) is None:
            kwargs["max_new_tokens"] = DEFAULT_NEW_TOKENS
        if "pad_token_id" not in kwargs and getattr(config, "pad_token_id", None) is None:
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
            if pad is not None:
                kwargs["pad_token_id"] = pad
        return kwargs

    # ------------------------------------------------------------ the guide's methods
    def generate_with(self, interventions, input_ids=None, reference=None, source=None, **generate_kwargs):
        """``model.generate`` with ``interventions`` (an :class:`InterventionSet`) applied;
        returns the generate output (``.sequences`` etc.)."""
        inputs = self._inputs(input_ids)
        kwargs = self._generate_kwargs(generate_kwargs)
        with eval_mode(self.model), apply_interventions(self.model, interventions, reference, source):
            return self.model.generate(**inputs, **kwargs)

    def ablate_attention_head(self, layer_idx: int, head_idx: int, input_ids=None, ablation_value=0.0,
                              positions=None, **generate_kwargs):
        """Generate with head ``head_idx`` of layer ``layer_idx`` set to ``ablation_value``
        (0.0: zero ablation; another number: that constant) at ``positions`` (default all).

        Returns ``generate``'s output with ``return_dict_in_generate=True`` (``.sequences``).
        """
        value = 0.0 if _is_default(ablation_value) else ablation_value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"ablation_value must be a number, got {value!r}")
        intervention = (HeadIntervention(layer_idx, head_idx, "zero", positions=positions) if value == 0
                        else HeadIntervention(layer_idx, head_idx, "constant", value=value, positions=positions))
        return self.generate_with(InterventionSet([intervention]), input_ids, **generate_kwargs)

    def amplify_attention_head(self, layer_idx: int, head_idx: int, factor=DEFAULT_AMPLIFICATION, input_ids=None,
                               positions=None, **generate_kwargs):
        """Generate with head ``head_idx`` of layer ``layer_idx`` multiplied by ``factor``
        (> 1 amplifies, < 1 dampens; default 2). Returns ``generate``'s output."""
        factor = DEFAULT_AMPLIFICATION if _is_default(factor) else factor
        intervention = HeadIntervention(layer_idx, head_idx, "scale", value=factor, positions=positions)
        return self.generate_with(InterventionSet([intervention]), input_ids, **generate_kwargs)

    def test_causal_intervention(self, base_text, intervention_specs, **generate_kwargs) -> dict:
        """The guide's experiment as a method: generate from ``base_text`` (a plain string,
        tokenized as is) with each ``(layer, head, "ablate" | "amplify")`` spec in turn.

        Returns ``{"baseline": output, (layer, head, kind): output, ...}``.
        """
        specs = _check_specs(intervention_specs)  # every spec checked before any model work
        inputs = self._inputs(base_text)
        results = {}
        with eval_mode(self.model):
            results["baseline"] = self.model.generate(**inputs, **self._generate_kwargs(generate_kwargs))
        for layer, head, kind in specs:
            if kind == "ablate":
                results[(layer, head, kind)] = self.ablate_attention_head(layer, head, inputs, **generate_kwargs)
            else:
                results[(layer, head, kind)] = self.amplify_attention_head(layer, head, input_ids=inputs,
                                                                            **generate_kwargs)
        return results

    def predict(self, statements, interventions=None, reference=None, source=None) -> Prediction | list[Prediction]:
        """The task's answer (logit difference, p(increase), label) with ``interventions``
        applied; one statement -> ``Prediction``, a list -> ``list[Prediction]``."""
        from finwidget.interventions.cached_run import CachedRun

        run = CachedRun(self.model, self.task, statements)
        result = run.predict(interventions if interventions is not None else InterventionSet(), reference, source)
        return result[0] if isinstance(statements, str) else result
