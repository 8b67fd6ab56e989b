"""Activation patching between a clean and a corrupted statement.

The two statements differ in one line item (e.g. net income's change positive in the
clean one, negative in the corrupted one) and have the same token length. Starting
from the corrupted run, one activation at a time is replaced by its value in the clean
run, and the task's logit difference is read:

- ``over="residual"``: the residual stream entering layer ``l`` at position ``t``
  (a ``[layers, tokens]`` map: where, and at which depth, the information that changes
  the answer sits);
- ``over="heads"``: one head's output at every position (a ``[layers, heads]`` map).

Each cell is reported as ``recovered = (LD_patched - LD_corrupted) / (LD_clean - LD_corrupted)``:
1 means that activation alone carries the whole difference, 0 that it carries none.
Every patched run uses the exact fast path (resume from the patched layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from finwidget.errors import InputError
from finwidget.interventions.cached_run import CachedRun, encode_statements
from finwidget.interventions.head_outputs import HeadOutputs
from finwidget.interventions.spec import HeadIntervention, InterventionSet
from finwidget.model_parts import ModelGeometry, check_index, is_integer
from finwidget.task import EarningsTask, model_device

ROWS_PER_CALL = 64


@dataclass
class PatchingResult:
    """What activation patching found for one clean/corrupted pair.

    over: ``"residual"`` or ``"heads"``.
    patched_logit_diff: ``[layers, tokens]`` (residual) or ``[layers, heads]`` (heads) float64.
    recovered: same shape, ``(patched - corrupted) / (clean - corrupted)``.
    clean_logit_diff, corrupted_logit_diff: the two unpatched runs.
    tokens: the prompt's tokens as text.
    differing_positions: token positions where the clean and corrupted prompts differ.
    columns: what each column is: token positions, group names (``position_groups``) or heads.
    """

    over: str
    patched_logit_diff: np.ndarray
    recovered: np.ndarray
    clean_logit_diff: float
    corrupted_logit_diff: float
    tokens: list[str] = field(default_factory=list)
    differing_positions: list[int] = field(default_factory=list)
    columns: list = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """Tidy form: ``layer, position|head, patched_logit_diff, recovered`` (+ ``token``)."""
        grouped = self.over == "residual" and self.columns and not isinstance(self.columns[0], (int, np.integer))
        column = "group" if grouped else ("position" if self.over == "residual" else "head")
        layers, cells = self.recovered.shape
        frame = pd.DataFrame({
            "layer": np.repeat(np.arange(layers), cells),
            column: np.tile(np.array(self.columns if self.columns else range(cells), dtype=object), layers),
            "patched_logit_diff": self.patched_logit_diff.reshape(-1),
            "recovered": self.recovered.reshape(-1),
        })
        if column == "position" and self.tokens:
            frame["token"] = np.tile(np.array(self.tokens, dtype=object), layers)
        return frame


def _check_groups(position_groups, seq_len: int) -> dict:
    if not isinstance(position_groups, dict) or not position_groups:
        raise InputError("position_groups must be a non-empty dict: name -> list of token positions")
    groups = {}
    for name, positions in position_groups.items():
        if is_integer(positions):
            positions = [positions]
        if isinstance(positions, (str, bytes, dict)) or not hasattr(positions, "__iter__"):
            raise InputError(f"position group {name!r} must be a list of token positions, got {type(positions).__name__}")
        positions = list(positions)
        if not positions:
            raise InputError(f"position group {name!r} is empty")
        groups[name] = [check_index(p, seq_len, "position", f"the prompt has {seq_len} tokens",
                                    where=f" of position group {name!r}") for p in positions]
    return groups


def _check_pairs(position_pairs, n_clean: int, n_corrupted: int) -> dict[str, list[tuple[int, int]]]:
    if not isinstance(position_pairs, dict) or not position_pairs:
        raise InputError("position_pairs must be a non-empty dict: name -> list of (clean position, corrupted position)")
    groups = {}
    for name, pairs in position_pairs.items():
        if isinstance(pairs, (str, bytes, dict)) or not hasattr(pairs, "__iter__"):
            raise InputError(f"position pairs {name!r} must be a list of (clean, corrupted) positions, "
                             f"got {type(pairs).__name__}")
        checked = []
        for pair in pairs:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InputError(f"position pairs {name!r}: each entry must be (clean position, corrupted position), "
                                 f"got {pair!r}")
            a = check_index(pair[0], n_clean, "position", f"the clean prompt has {n_clean} tokens",
                            where=f" of position pairs {name!r}")
            b = check_index(pair[1], n_corrupted, "position", f"the corrupted prompt has {n_corrupted} tokens",
                            where=f" of position pairs {name!r}")
            checked.append((a, b))
        if not checked:
            raise InputError(f"position pairs {name!r} is empty")
        targets = [b for _, b in checked]
        if len(set(targets)) != len(targets):
            raise InputError(f"position pairs {name!r} patch one corrupted position twice")
        groups[name] = checked
    return groups


def _patch_pairs(model, task, clean_batch, corrupted_batch, groups, layers, geometry) -> PatchingResult:
    """Residual patching by explicit (clean, corrupted) position pairs: ``[layers, groups]``."""
    clean_run = CachedRun(model, task, clean_batch)
    corrupted_run = CachedRun(model, task, corrupted_batch)
    clean_ld = float(clean_run.clean_logit_diff[0])
    corrupted_ld = float(corrupted_run.clean_logit_diff[0])
    columns = list(groups)
    patched = np.full((geometry.num_layers, len(columns)), np.nan)
    for layer in layers:
        source = clean_run.residuals[layer]  # [1, T_clean, hidden]
        target = corrupted_run.residuals[layer]  # [1, T_corrupted, hidden]
        for start in range(0, len(columns), ROWS_PER_CALL):
            names = columns[start:start + ROWS_PER_CALL]
            hidden = target.repeat(len(names), 1, 1)
            for row, name in enumerate(names):
                clean_positions = torch.tensor([a for a, _ in groups[name]], device=target.device)
                corrupted_positions = torch.tensor([b for _, b in groups[name]], device=target.device)
                hidden[row, corrupted_positions] = source[0, clean_positions].to(target.dtype)
            logits = corrupted_run.resume(layer, hidden)
            patched[layer, start:start + len(names)] = task.logit_diff(logits).float().cpu().numpy()
    denominator = clean_ld - corrupted_ld
    recovered = (patched - corrupted_ld) / denominator if denominator != 0 else np.full_like(patched, np.nan)
    ids_clean = clean_batch["input_ids"][0].cpu().tolist()
    ids_corrupted = corrupted_batch["input_ids"][0].cpu().tolist()
    differing = sorted({b for pairs in groups.values() for a, b in pairs if ids_clean[a] != ids_corrupted[b]})
    tokenizer = task.tokenizer
    return PatchingResult(
        over="residual", patched_logit_diff=patched, recovered=recovered, clean_logit_diff=clean_ld,
        corrupted_logit_diff=corrupted_ld,
        tokens=[tokenizer.decode([i]) for i in ids_clean] if tokenizer is not None else [],
        differing_positions=differing, columns=columns,
    )


def _single_statement_batch(task, statement, device, what):
    if isinstance(statement, (list, tuple)) and len(statement) == 1:
        statement = statement[0]
    batch = encode_statements(task, statement, device, what)
    if batch["input_ids"].shape[0] != 1:
        raise InputError(f"{what}: activation_patching takes one statement, got {batch['input_ids'].shape[0]}")
    return batch


def activation_patching(
    model,
    task: EarningsTask,
    clean,
    corrupted=None,
    over: str = "residual",
    layers=None,
    position_groups: dict[str, list[int]] | None = None,
    position_pairs: dict[str, list[tuple[int, int]]] | None = None,
) -> PatchingResult:
    """Patch clean activations into the corrupted run, one at a time.

    Args:
        model: a Hugging Face causal LM.
        task: the :class:`~finwidget.task.EarningsTask`.
        clean: the clean statement (str, demo ``Statement``, encoded batch of one row),
            or a ``(clean, corrupted)`` pair such as ``make_statement_pairs(...)[i]``.
        corrupted: the corrupted statement (same token length), unless ``clean`` is a pair.
        over: ``"residual"`` (layer x position) or ``"heads"`` (layer x head).
        layers: layers to patch (default: all).
        position_groups: ``over="residual"`` only: name -> token positions patched together
            (e.g. every token of one line item); the result then has one column per group
            (``PatchingResult.columns``) instead of one per position.
        position_pairs: ``over="residual"`` only: name -> ``(clean position, corrupted
            position)`` pairs patched together: the clean residual at each clean position
            replaces the corrupted residual at its corrupted position. With pairs the two
            prompts may have different token lengths (``finwidget.counterfactuals`` builds the
            pairs from a span alignment); ``differing_positions`` then lists the corrupted
            positions whose paired clean token differs.

    Raises:
        InputError: the two prompts have different token lengths and no ``position_pairs``
            say which positions correspond, or ``over`` is unknown.
    """
    if corrupted is None:
        try:
            clean, corrupted = clean
        except (TypeError, ValueError):
            raise InputError("pass clean and corrupted statements, or one (clean, corrupted) pair") from None
    if over not in ("residual", "heads"):
        raise InputError(f"over must be 'residual' or 'heads', got {over!r}")
    geometry = ModelGeometry.of(model)
    layers = list(range(geometry.num_layers)) if layers is None else [geometry.check_layer(l) for l in layers]
    device = model_device(model)
    clean_batch = _single_statement_batch(task, clean, device, "clean statement")
    corrupted_batch = _single_statement_batch(task, corrupted, device, "corrupted statement")
    n_clean, n_corrupted = clean_batch["input_ids"].shape[1], corrupted_batch["input_ids"].shape[1]
    if position_pairs is not None:
        if over != "residual" or position_groups is not None:
            raise InputError("position_pairs applies to over='residual' only, without position_groups")
        pairs = _check_pairs(position_pairs, n_clean, n_corrupted)
        return _patch_pairs(model, task, clean_batch, corrupted_batch, pairs, layers, geometry)
    if n_clean != n_corrupted:
        raise InputError(
            f"the clean prompt has {n_clean} tokens and the corrupted one {n_corrupted}; activation patching "
            "needs the same token length so positions correspond (change one value without changing its "
            "number of digits, or use finwidget.demo.make_statement_pairs)"
        )
    clean_run = CachedRun(model, task, clean_batch)
    corrupted_run = CachedRun(model, task, corrupted_batch)
    clean_ld = float(clean_run.clean_logit_diff[0])
    corrupted_ld = float(corrupted_run.clean_logit_diff[0])
    seq_len = n_clean
    columns: list = list(range(seq_len))
    if position_groups is not None:
        if over != "residual":
            raise InputError("position_groups applies to over='residual' only")
        groups = _check_groups(position_groups, seq_len)
        columns = list(groups)
    else:
        groups = {p: [p] for p in range(seq_len)}

    if over == "residual":
        patched = np.full((geometry.num_layers, len(columns)), np.nan)
        masks = torch.zeros((len(columns), seq_len), dtype=torch.bool)
        for index, name in enumerate(columns):
            masks[index, groups[name]] = True
        for layer in layers:
            source = clean_run.residuals[layer]  # [1, T, hidden]
            target = corrupted_run.residuals[layer]
            for start in range(0, len(columns), ROWS_PER_CALL):
                select = masks[start:start + ROWS_PER_CALL].to(target.device).unsqueeze(-1)  # [R, T, 1]
                hidden = torch.where(select, source.to(target.dtype), target)
                logits = corrupted_run.resume(layer, hidden)
                patched[layer, start:start + select.shape[0]] = task.logit_diff(logits).float().cpu().numpy()
    else:
        source = HeadOutputs.record(model, clean_batch, layers=layers, what="clean statement")
        sets = [InterventionSet([HeadIntervention(l, h, "resample")]) for l in layers for h in range(geometry.num_heads)]
        diffs = corrupted_run.logit_diffs(sets, source=source)[:, 0].numpy()
        patched = np.full((geometry.num_layers, geometry.num_heads), np.nan)
        for (iv_set, d) in zip(sets, diffs):
            iv = iv_set.interventions[0]
            patched[iv.layer, iv.head] = d

    denominator = clean_ld - corrupted_ld
    recovered = (patched - corrupted_ld) / denominator if denominator != 0 else np.full_like(patched, np.nan)
    ids_clean = clean_batch["input_ids"][0].cpu()
    ids_corrupted = corrupted_batch["input_ids"][0].cpu()
    tokenizer = task.tokenizer
    tokens = [tokenizer.decode([int(i)]) for i in ids_clean] if tokenizer is not None else []
    return PatchingResult(
        columns=columns if over == "residual" else list(range(geometry.num_heads)),
        over=over,
        patched_logit_diff=patched,
        recovered=recovered,
        clean_logit_diff=clean_ld,
        corrupted_logit_diff=corrupted_ld,
        tokens=tokens,
        differing_positions=torch.nonzero(ids_clean != ids_corrupted).flatten().tolist(),
    )
