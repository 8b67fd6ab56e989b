"""Token positions of an original prompt lined up with those of its counterfactual.

``align_tokens(counterfactual, tokenizer, task=None)`` tokenizes both prompts (the
task's prompts when ``task`` is given, else the texts themselves) and sorts every token
into the ``SpanAlignment`` segment holding its first visible character (a token of
spaces only goes with the character after it, as in ``read_statement``; a token with a
line break stays where it starts; a space-plus-sign token such as ``" +"`` goes with
the number). For each segment it gives a ``TokenGroup``: the original token
positions and the edited token positions, and which of them pair up:

- a segment with the same token ids on both sides: position by position (1:1);
- a number whose tokens changed (``"+44"`` -> ``"-1,051"``, 3 tokens -> 6): its tokens
  are cut into a head (sign, currency, bracket: the tokens before the first digit),
  digits (through the last digit) and a tail (``%``, ``)``, a scale word); heads pair
  from the left, digits from the right (units digit with units digit, then tens, ...),
  tails from the left. Tokens left over on the longer side pair with nothing.
- any other segment whose tokens changed (a re-padded aligned column, a merge across
  the segment's edge): the common leading and trailing tokens pair, the rest do not.

Special tokens the tokenizer adds (offsets ``(0, 0)``) pair in order.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from finwidget.errors import InputError


@dataclass(frozen=True)
class TokenGroup:
    """The tokens of one aligned segment in both prompts.

    kind: ``"line_item"``, ``"number"``, ``"text"``, ``"template"`` (prompt text around
        the statement) or ``"special"``.
    original_positions, edited_positions: token positions (each sorted).
    pairs: ``(original position, edited position)`` that correspond (see module docstring).
    identical: the two sides have the same token ids.
    line: the segment's 0-based line in the original statement (-1 for template/special).
    item, year, role: as in ``AlignedSpan``.
    """

    kind: str
    original_positions: tuple[int, ...]
    edited_positions: tuple[int, ...]
    pairs: tuple[tuple[int, int], ...]
    identical: bool
    line: int = -1
    item: str | None = None
    year: int | None = None
    role: str | None = None
    label: str = ""

    @property
    def covering_pairs(self) -> tuple[tuple[int, int], ...]:
        """``pairs`` plus one pair for every edited position left without a partner: it takes
        the original position paired with the nearest paired edited position of the group
        (so ``"-1,051"``'s extra ``"1"``, ``","``, ``"0"`` take the original ``"+44"``'s first
        ``"4"``). Every edited position of the group is covered when the group has a pair; an
        original position may then serve several edited ones."""
        if not self.pairs:
            return ()
        partner = {b: a for a, b in self.pairs}
        paired = sorted(partner)
        out = dict(partner)
        for b in self.edited_positions:
            if b not in out:
                nearest = min(paired, key=lambda p: (abs(p - b), -p))
                out[b] = partner[nearest]
        return tuple(sorted((a, b) for b, a in out.items()))


@dataclass(frozen=True)
class TokenAlignment:
    """Original prompt tokens -> edited prompt tokens.

    original_ids ``[T_original]``, edited_ids ``[T_edited]``: the two prompts' token ids.
    groups: one ``TokenGroup`` per segment holding tokens, in text order.
    """

    original_ids: tuple[int, ...]
    edited_ids: tuple[int, ...]
    groups: tuple[TokenGroup, ...]

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Every corresponding ``(original position, edited position)``, by original position."""
        return sorted(p for g in self.groups for p in g.pairs)

    @property
    def changed_groups(self) -> list[TokenGroup]:
        """Groups whose token ids differ (the group-to-group pairs)."""
        return [g for g in self.groups if not g.identical]

    def position_map(self) -> dict[int, int]:
        """``{original position: edited position}`` for every paired token."""
        return dict(self.pairs)

    def pairs_by(self, by: str = "line", cover: bool = False) -> dict[str, list[tuple[int, int]]]:
        """Paired positions grouped by ``"line"`` (one entry per statement line, named by its
        line item when it has one, else ``"line N"``), ``"segment"`` (one per aligned segment
        with tokens) or ``"item"`` (line items only: name and numbers of each row).

        ``cover=True`` uses each group's ``covering_pairs`` (every edited position of a group
        gets a partner) instead of its strict 1:1 ``pairs``."""
        if by not in ("line", "segment", "item"):
            raise InputError(f"by must be 'line', 'segment' or 'item', got {by!r}")
        out: dict[str, list[tuple[int, int]]] = {}
        names: dict[int, str] = {}
        for g in self.groups:
            if g.kind == "line_item" and g.line not in names:
                names[g.line] = g.item or f"line {g.line}"
        for k, g in enumerate(self.groups):
            pairs = g.covering_pairs if cover else g.pairs
            if not pairs:
                continue
            if by == "segment":
                key = f"{k}: {g.label}"
            elif by == "item":
                if g.item is None or g.kind == "text":
                    continue
                key = g.item
            else:
                if g.line < 0:
                    continue
                key = names.get(g.line, f"line {g.line}")
            out.setdefault(key, []).extend(pairs)
        return out

    def to_frame(self):
        """One row per group: kind, label, line, positions on both sides, identical."""
        import pandas as pd

        return pd.DataFrame([{
            "kind": g.kind, "label": g.label, "line": g.line, "item": g.item, "year": g.year, "role": g.role,
            "original_positions": list(g.original_positions), "edited_positions": list(g.edited_positions),
            "pairs": list(g.pairs), "identical": g.identical,
        } for g in self.groups])


def _prompt(text: str, task) -> tuple[str, int, int]:
    """The prompt, and where the statement's characters ``[0, n)`` sit in it (offset, n)."""
    if task is None:
        return text, 0, len(text)
    prompt = task.prompt(text)
    body = text.rstrip()
    where = prompt.find(body)
    if where < 0:
        raise InputError("the task's prompt does not contain the statement's text; cannot line up the tokens")
    return prompt, where, len(body)


def _encode(tokenizer, prompt: str, add_special_tokens: bool):
    if not getattr(tokenizer, "is_fast", False):
        raise InputError("align_tokens needs a fast (Rust) Hugging Face tokenizer, which reports character offsets; "
                         f"got {type(tokenizer).__name__}")
    encoding = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    return [int(i) for i in encoding["input_ids"]], [(int(s), int(e)) for s, e in encoding["offset_mapping"]]


def _segment_bounds(alignment, side: str, offset: int, body_length: int, prompt_length: int):
    """``[(start, end, segment index)]`` in prompt characters; -1 for the template around the statement."""
    bounds = [(0, offset, -1)] if offset > 0 else []
    for k, span in enumerate(alignment.spans):
        start = span.original_start if side == "original" else span.edited_start
        end = span.original_end if side == "original" else span.edited_end
        start, end = min(start, body_length), min(end, body_length)
        if end > start:
            bounds.append((offset + start, offset + end, k))
    if offset + body_length < prompt_length:
        bounds.append((offset + body_length, prompt_length, -1))
    return bounds


def _tokens_by_segment(prompt, offsets, bounds):
    starts = [b[0] for b in bounds]
    by_segment: dict[int, list[int]] = {}
    template: list[tuple[bool, int]] = []  # (before the statement, position)
    special: list[int] = []
    for t, (start, end) in enumerate(offsets):
        if end <= start:
            special.append(t)
            continue
        anchor = start
        while anchor < end and prompt[anchor].isspace():
            anchor += 1
        if anchor == end:  # only spaces: with what follows them (as the reader does), a line break stays
            anchor = end if end < len(prompt) and not any(c in "\r\n" for c in prompt[start:end]) else start
        i = max(0, bisect.bisect_right(starts, anchor) - 1)
        segment = bounds[i][2]
        if segment < 0:
            template.append((i == 0 and len(bounds) > 1 and bounds[1][2] >= 0, t))
        else:
            by_segment.setdefault(segment, []).append(t)
    return by_segment, template, special


_DIGIT = re.compile(r"\d")


def _number_pairs(a: list[int], b: list[int], a_text: list[str], b_text: list[str]) -> list[tuple[int, int]]:
    def split(positions, texts):
        digit = [k for k, x in enumerate(texts) if _DIGIT.search(x)]
        if not digit:
            return positions, [], []
        return positions[:digit[0]], positions[digit[0]:digit[-1] + 1], positions[digit[-1] + 1:]

    head_a, digits_a, tail_a = split(a, a_text)
    head_b, digits_b, tail_b = split(b, b_text)
    pairs = list(zip(head_a, head_b))
    pairs += list(zip(reversed(digits_a), reversed(digits_b)))
    pairs += list(zip(tail_a, tail_b))
    return sorted(pairs)


def _edge_pairs(a: list[int], b: list[int], ids_a, ids_b) -> list[tuple[int, int]]:
    pairs = []
    lead = 0
    while lead < min(len(a), len(b)) and ids_a[a[lead]] == ids_b[b[lead]]:
        pairs.append((a[lead], b[lead]))
        lead += 1
    trail = 0
    while trail < min(len(a), len(b)) - lead and ids_a[a[-1 - trail]] == ids_b[b[-1 - trail]]:
        pairs.append((a[-1 - trail], b[-1 - trail]))
        trail += 1
    return sorted(pairs)


def align_tokens(counterfactual, tokenizer, task=None, *, add_special_tokens: bool | None = None) -> TokenAlignment:
    """Line up the token positions of ``counterfactual.original`` and ``counterfactual.text``.

    Args:
        counterfactual: a ``CounterfactualStatement``.
        tokenizer: a fast Hugging Face tokenizer.
        task: an ``EarningsTask``: align the prompts ``task.prompt(original)`` and
            ``task.prompt(edited)`` (what the model runs). Without it the texts are aligned.
        add_special_tokens: as for the tokenizer; default as ``EarningsTask.encode``.

    Returns:
        ``TokenAlignment`` (see the module docstring for how tokens pair).
    """
    alignment = getattr(counterfactual, "alignment", None)
    if alignment is None or not hasattr(counterfactual, "original"):
        raise InputError(f"align_tokens needs a CounterfactualStatement, got {type(counterfactual).__name__}")
    if add_special_tokens is None:
        add_special_tokens = not getattr(task, "use_chat_template", False) if task is not None else True
    sides = {}
    for side, text in (("original", counterfactual.original), ("edited", counterfactual.text)):
        prompt, offset, length = _prompt(text, task)
        ids, offsets = _encode(tokenizer, prompt, add_special_tokens)
        bounds = _segment_bounds(alignment, side, offset, length, len(prompt))
        sides[side] = (prompt, ids, offsets, _tokens_by_segment(prompt, offsets, bounds))
    prompt_a, ids_a, offsets_a, (seg_a, template_a, special_a) = sides["original"]
    prompt_b, ids_b, offsets_b, (seg_b, template_b, special_b) = sides["edited"]

    groups: list[TokenGroup] = []
    if special_a or special_b:
        same = [ids_a[t] for t in special_a] == [ids_b[t] for t in special_b]
        groups.append(TokenGroup("special", tuple(special_a), tuple(special_b), tuple(zip(special_a, special_b)),
                                 same, label="special tokens"))

    def template_group(before: bool):
        pick_a = [t for first, t in template_a if first == before]
        pick_b = [t for first, t in template_b if first == before]
        if not pick_a and not pick_b:
            return
        same = [ids_a[t] for t in pick_a] == [ids_b[t] for t in pick_b]
        pairs = list(zip(pick_a, pick_b)) if same else _edge_pairs(pick_a, pick_b, ids_a, ids_b)
        groups.append(TokenGroup("template", tuple(pick_a), tuple(pick_b), tuple(pairs), same,
                                 label="prompt before the statement" if before else "prompt after the statement"))

    template_group(True)
    for k, span in enumerate(alignment.spans):
        a, b = seg_a.get(k, []), seg_b.get(k, [])
        if not a and not b:
            continue
        same = [ids_a[t] for t in a] == [ids_b[t] for t in b]
        if same:
            pairs = list(zip(a, b))
        elif span.kind == "number":
            pairs = _number_pairs(a, b, [prompt_a[slice(*offsets_a[t])] for t in a],
                                  [prompt_b[slice(*offsets_b[t])] for t in b])
        else:
            pairs = _edge_pairs(a, b, ids_a, ids_b)
        groups.append(TokenGroup(span.kind, tuple(a), tuple(b), tuple(pairs), same, span.line, span.item, span.year,
                                 span.role, span.label))
    template_group(False)
    return TokenAlignment(tuple(ids_a), tuple(ids_b), tuple(groups))
