"""Two-answer tasks: prompt, answer words, and the readout as numbers.

A :class:`TwoAnswerTask` asks any question about a statement with two answer words
(``" yes"``/``" no"``, ``" beat"``/``" miss"``, ...). Every metric and intervention
effect in finwidget is expressed in the task's *logit difference*:
``logit(first answer) - logit(second answer)`` at the answer position (the last
token of the prompt). The probability of the first answer is the softmax over just
those two logits, ``sigmoid(logit_diff)``. :class:`EarningsTask` is the instance the
guide uses: "Will earnings increase or decrease next year?", answers
``" increase"``/``" decrease"``.

Batches are left-padded, so the answer position is the last column for every row.
Rotary position embeddings only see relative positions, so a left-padded row gives
the same logits as the same text alone (up to float rounding).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import overload

import torch

from finwidget.errors import AnswerWordError, InputError, NonFiniteError
from finwidget.model_parts import answer_direction, embed_tokens, text_config

DEFAULT_QUESTION = "Question: Will earnings increase or decrease next year?"
DEFAULT_ANSWERS = (" increase", " decrease")
LABELS = ("increase", "decrease")


@dataclass(frozen=True)
class Prediction:
    """The task's answer for one statement.

    logit_diff: logit of the first answer token ("increase") minus that of the second
        ("decrease").
    p_increase: probability of the first answer over the two, ``sigmoid(logit_diff)``
        (named for the earnings task; for any :class:`TwoAnswerTask` it is the first answer's).
    label: the task's first label ("increase") if ``logit_diff > 0``, else its second.
    n_tokens: length of the prompt in tokens.
    """

    logit_diff: float
    p_increase: float
    label: str
    n_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


_FIRST_WORD = re.compile(r"\s*[^\W_]+")


def _suggestion(word: str) -> str:
    """What the user most likely meant: the word's text after one plain leading space."""
    return " " + word.strip()


def _answer_token_id(tokenizer, word: str) -> tuple[int, bool]:
    """The id of ``word``'s first token and whether the word is a single token.

    The model's answer is read from the first token alone, so that token must be the
    word's whole first word: a word whose first token is a prefix (``"increase"`` read
    as ``"in"``), a lone space or a partial UTF-8 byte (a no-break space) is refused
    with ``AnswerWordError``; a word of several whole-word tokens warns, naming the
    token read.
    """
    if not isinstance(word, str) or not word.strip():
        raise AnswerWordError(f"answer word must be a non-empty string, got {word!r}")
    ids = tokenizer.encode(word, add_special_tokens=False)
    if not ids:
        raise AnswerWordError(f"answer word {word!r} encodes to no tokens with this tokenizer")
    if tokenizer.unk_token_id is not None and ids[0] == tokenizer.unk_token_id:
        raise AnswerWordError(
            f"answer word {word!r} is unknown to this tokenizer (it maps to the unknown token); "
            "choose answer words that are in its vocabulary"
        )
    read = tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(ids[0])])
    first_word = _FIRST_WORD.match(word)
    whole = first_word.group(0) if first_word else word[: len(word) - len(word.lstrip())] + word.strip()[:1]
    if "\ufffd" in read or not read.strip() or len(read) < len(whole):
        why = "a partial character (part of a multi-byte UTF-8 character)" if "\ufffd" in read else (
            "whitespace only" if not read.strip() else "only the start of a word")
        hint = _suggestion(word)
        did_you_mean = ""
        if hint != word and len(tokenizer.encode(hint, add_special_tokens=False)) >= 1:
            did_you_mean = f"did you mean {hint!r} with its leading space? "
        raise AnswerWordError(
            f"answer word {word!r} starts with the token {read!r}, which is {why}: the model's answer "
            f"would be read from that token, not from {word.strip()!r}. {did_you_mean}"
            "Answer words should be whole-word tokens of this tokenizer, usually with a plain leading "
            "space (the answer follows a space after the prompt)"
        )
    if len(ids) > 1:
        warnings.warn(
            f"answer word {word!r} is {len(ids)} tokens with this tokenizer; the task reads the model's "
            f"answer from its first token {read!r} only",
            UserWarning,
            stacklevel=4,
        )
    return ids[0], len(ids) == 1


class TwoAnswerTask:
    """Any yes/no-style question about a statement, read as a logit difference.

    Turns a statement into the model's prompt and reads its answer as
    ``logit(answers[0]) - logit(answers[1])`` at the answer position; every analysis,
    intervention and view in finwidget takes such a task.

    Args:
        tokenizer: the model's Hugging Face tokenizer.
        question: appended after the statement unless the statement already ends
            with it, e.g. ``"Question: Is the going-concern risk high?"``.
        answers: the two answer words, the "positive" one first (its probability is
            ``Prediction.p_increase``). Each should be a single whole-word token, usually
            with its leading space (``" yes"``); a word whose first token is not a whole
            word is refused, a multi-token word warns and is read by its first token,
            which must differ between the two words.
        labels: the two labels a prediction reports (default: the answer words without
            their spaces).
        answer_prefix: text after the question that the answer word completes.
        chat_answer_prefix: the same after a chat template's assistant turn opens.
        use_chat_template: ``"auto"`` uses the tokenizer's chat template when it has
            one (instruct models), ``True``/``False`` force it on or off.
        system_prompt: optional system message for chat templates.
    """

    def __init__(
        self,
        tokenizer,
        question: str,
        answers: Sequence[str],
        labels: Sequence[str] | None = None,
        answer_prefix: str = "Answer:",
        chat_answer_prefix: str = "Answer:",
        use_chat_template: bool | str = "auto",
        system_prompt: str | None = None,
    ):
        _check_task_options(tokenizer, question, answer_prefix, chat_answer_prefix, use_chat_template, system_prompt)
        if isinstance(answers, str) or not isinstance(answers, Sequence) or len(answers) != 2:
            raise AnswerWordError(f"the task needs exactly two answer words, got {answers!r}")
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"the question must be a non-empty string, got {question!r}")
        if labels is None:
            labels = tuple(str(a).strip() for a in answers)
        if isinstance(labels, str) or len(labels) != 2 or not all(isinstance(x, str) and x for x in labels):
            raise InputError(f"labels must be two non-empty strings, got {labels!r}")
        if labels[0] == labels[1]:
            raise InputError(f"the two labels must differ, got {list(labels)!r}")
        self.tokenizer = tokenizer
        self.answers = tuple(answers)
        self.labels: tuple[str, str] = (labels[0], labels[1])
        self.question = question
        self.answer_prefix = answer_prefix
        self.chat_answer_prefix = chat_answer_prefix
        self.system_prompt = system_prompt
        if use_chat_template == "auto":
            use_chat_template = getattr(tokenizer, "chat_template", None) is not None
        self.use_chat_template = bool(use_chat_template)

        first_ids, single = zip(*(_answer_token_id(tokenizer, w) for w in self.answers))
        if first_ids[0] == first_ids[1]:
            raise AnswerWordError(
                f"answer words {self.answers[0]!r} and {self.answers[1]!r} start with the same token "
                f"(id {first_ids[0]}), so the model's first answer token cannot tell them apart; "
                "choose words whose first tokens differ"
            )
        self.answer_token_ids: tuple[int, int] = (int(first_ids[0]), int(first_ids[1]))
        self.answers_are_single_tokens: bool = all(single)

    # ------------------------------------------------------------------ prompts
    def prompt(self, statement: str) -> str:
        """The full prompt for one statement; the next token is the answer."""
        _check_text(statement)
        body = statement.rstrip()
        if not body.endswith(self.question):
            body = f"{body}\n{self.question}"
        if not self.use_chat_template:
            return f"{body}\n{self.answer_prefix}"
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": body})
        chat = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return chat + self.chat_answer_prefix

    def encode(
        self,
        statements: str | Sequence[str],
        max_length: int | None = None,
        truncate: bool = False,
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tokenize prompts into a left-padded batch.

        Returns ``{"input_ids": [B, T] long, "attention_mask": [B, T] long}``; the
        answer position is ``T - 1`` for every row. A prompt longer than
        ``max_length`` raises, unless ``truncate=True``, which drops tokens from the
        start of the statement (the question and answer prefix are kept).
        """
        texts = _check_texts(statements)
        _check_encode_options(max_length, truncate, device)
        add_special = not self.use_chat_template
        rows = []
        for i, text in enumerate(texts):
            ids = self.tokenizer(self.prompt(text), add_special_tokens=add_special)["input_ids"]
            if max_length is not None and len(ids) > max_length:
                if not truncate:
                    where = "" if len(texts) == 1 else f"statement {i}: "
                    raise InputError(
                        f"{where}the prompt is {len(ids)} tokens, longer than the model's context of "
                        f"{max_length} tokens; shorten the statement or pass truncate=True to drop "
                        "tokens from its start"
                    )
                ids = ids[-max_length:]
            rows.append(ids)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, ids in enumerate(rows):
            input_ids[b, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[b, width - len(ids):] = 1
        if device is not None:
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # ------------------------------------------------------------------ readout
    def logit_diff(self, answer_logits: torch.Tensor) -> torch.Tensor:
        """``[B, vocab]`` logits at the answer position -> ``[B]`` float32 logit difference."""
        inc, dec = self.answer_token_ids
        if not isinstance(answer_logits, torch.Tensor) or answer_logits.dim() == 0 or \
                answer_logits.shape[-1] <= max(inc, dec):
            shape = tuple(answer_logits.shape) if isinstance(answer_logits, torch.Tensor) else type(answer_logits).__name__
            raise InputError(f"answer logits must be a tensor [..., vocab] holding the answer tokens {inc} and {dec}, "
                             f"got {shape}; is this the model of this task's tokenizer?")
        return (answer_logits[..., inc].float() - answer_logits[..., dec].float())

    def unembedding_direction(self, model) -> torch.Tensor:
        """``[E]`` direction in the final residual stream (after the final norm)
        whose dot product with the normed residual is the logit difference."""
        inc, dec = self.answer_token_ids
        return answer_direction(model, inc, dec)

    def predictions(self, answer_logits: torch.Tensor, attention_mask: torch.Tensor) -> list[Prediction]:
        """Read a batch of answer-position logits ``[B, vocab]`` into predictions (a
        :class:`~finwidget.errors.NonFiniteError` when a logit difference is NaN or infinite)."""
        diff = check_finite_answer(self.logit_diff(answer_logits).detach().cpu())
        lengths = attention_mask.sum(dim=1).cpu()
        return [
            Prediction(
                logit_diff=float(d),
                p_increase=float(torch.sigmoid(d)),
                label=self.labels[0] if d > 0 else self.labels[1],
                n_tokens=int(n),
            )
            for d, n in zip(diff, lengths)
        ]

    def answer_logits(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the model on an encoded batch; return ``[B, vocab]`` logits at the answer position."""
        with torch.inference_mode(), eval_mode(model):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=1)
        return out.logits[:, -1, :]


def check_finite_answer(logit_diff: torch.Tensor, cause: str = "") -> torch.Tensor:
    """``logit_diff`` (``[B]`` or ``[R, B]``) unchanged when every value is finite; otherwise a
    :class:`~finwidget.errors.NonFiniteError` naming the statements and ``cause`` (e.g. "with
    L0H2 scale x1e+30"). Every prediction, label and flip is read through this check: no
    answer is ever read from NaN."""
    finite = torch.isfinite(logit_diff)
    if bool(finite.all()):
        return logit_diff
    bad = (~finite).reshape(-1, logit_diff.shape[-1]).any(dim=0).nonzero().flatten().tolist()
    which = f"statement {bad[0]}" if len(bad) == 1 else f"statements {bad[:8]}{'...' if len(bad) > 8 else ''}"
    raise NonFiniteError(
        f"the logit difference is not finite (NaN or infinite) for {which}{' ' + cause if cause else ''}; "
        "a value overflowed the model's number format (an intervention value too large for it, or "
        "non-finite weights), so no answer is read from it"
    )


class EarningsTask(TwoAnswerTask):
    """The earnings-direction task: "Will earnings increase or decrease next year?"

    A :class:`TwoAnswerTask` with answers ``" increase"``/``" decrease"`` and labels
    "increase"/"decrease"; ``logit_diff`` is ``logit(" increase") - logit(" decrease")``.

    Args:
        tokenizer: the model's Hugging Face tokenizer.
        answers: the two answer words, "increase" first (see :class:`TwoAnswerTask`).
        question, answer_prefix, chat_answer_prefix, use_chat_template, system_prompt:
            as for :class:`TwoAnswerTask`.
    """

    def __init__(
        self,
        tokenizer,
        answers: Sequence[str] = DEFAULT_ANSWERS,
        question: str = DEFAULT_QUESTION,
        answer_prefix: str = "Answer:",
        chat_answer_prefix: str = "Earnings will",
        use_chat_template: bool | str = "auto",
        system_prompt: str | None = None,
    ):
        super().__init__(
            tokenizer,
            question=question,
            answers=answers,
            labels=LABELS,
            answer_prefix=answer_prefix,
            chat_answer_prefix=chat_answer_prefix,
            use_chat_template=use_chat_template,
            system_prompt=system_prompt,
        )


class eval_mode:
    """Context manager: put a module in eval mode, restore its training flag on exit."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)
        return False


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise InputError(f"a statement must be a str, got {type(text).__name__}")
    if not text.strip():
        raise InputError("the statement is empty (or only whitespace); pass the statement's text")
    _check_encodable(text, "the statement")
    return text


def _check_encodable(text: str, what: str) -> None:
    """An :class:`InputError` when ``text`` holds a lone surrogate (text that is not Unicode, e.g.
    from a file read with ``errors="surrogateescape"``), which no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"{what} holds {text[err.start:err.end].encode('utf-8', 'backslashreplace').decode()!s} at character "
            f"{err.start}, a lone surrogate that is not Unicode text; decode the file as UTF-8 (or remove it)"
        ) from None


def _check_task_options(tokenizer, question, answer_prefix, chat_answer_prefix, use_chat_template,
                        system_prompt) -> None:
    """:class:`InputError` for task options of the wrong type (checked before anything is built)."""
    if isinstance(tokenizer, (str, bytes)) or not callable(getattr(tokenizer, "encode", None)) or \
            not callable(tokenizer):
        raise InputError(f"EarningsTask needs the model's Hugging Face tokenizer, got {type(tokenizer).__name__}; "
                         "load both with finwidget.load_model(name)")
    for name, value in (("question", question), ("answer_prefix", answer_prefix),
                        ("chat_answer_prefix", chat_answer_prefix)):
        if not isinstance(value, str):
            raise InputError(f"{name} must be a str, got {type(value).__name__}")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise InputError(f"system_prompt must be a str or None, got {type(system_prompt).__name__}")
    if use_chat_template not in ("auto", True, False) or isinstance(use_chat_template, (int, float)) and \
            not isinstance(use_chat_template, bool):
        raise InputError(f"use_chat_template must be 'auto', True or False, got {str(use_chat_template)[:80]!r}")
    if use_chat_template is True and getattr(tokenizer, "chat_template", None) is None:
        raise InputError("use_chat_template=True but this tokenizer has no chat template; use "
                         "use_chat_template='auto' or False")


def _check_encode_options(max_length, truncate, device) -> None:
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise InputError(f"max_length must be a positive int or None, got {str(max_length)[:80]}")
    if not isinstance(truncate, bool):
        raise InputError(f"truncate must be True or False, got {type(truncate).__name__} {str(truncate)[:80]}")
    if device is not None:
        try:
            torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise InputError(f"device {str(device)[:80]!r} is not a torch device (e.g. 'cpu', 'cuda:0')") from None


def _check_texts(statements) -> list[str]:
    if isinstance(statements, str):
        return [_check_text(statements)]
    if not isinstance(statements, (list, tuple)):
        raise InputError(f"expected a str or a list of str, got {type(statements).__name__}")
    if len(statements) == 0:
        raise InputError("the list of statements is empty; pass at least one statement")
    for i, s in enumerate(statements):
        if not isinstance(s, str):
            raise InputError(f"statement {i} must be a str, got {type(s).__name__}")
        if not s.strip():
            raise InputError(f"statement {i} is empty (or only whitespace)")
    return list(statements)


def context_length(model) -> int | None:
    """The model's context length from its config, or None when it does not say."""
    return getattr(text_config(model), "max_position_embeddings", None)


def model_device(model) -> torch.device:
    """Where the model's input embeddings live (where input ids must go)."""
    return embed_tokens(model).weight.device


def _trim_left_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop leading columns that are padding in every row of a left-padded batch."""
    first_real = int((batch["attention_mask"].sum(dim=0) > 0).int().argmax())
    return {k: v[:, first_real:] for k, v in batch.items()}


@overload
def predict(model, tokenizer, text_or_texts: str, task: TwoAnswerTask | None = None, batch_size: int = 8,
            truncate: bool = False) -> Prediction: ...
@overload
def predict(model, tokenizer, text_or_texts: Sequence[str], task: TwoAnswerTask | None = None,
            batch_size: int = 8, truncate: bool = False) -> list[Prediction]: ...
def predict(
    model,
    tokenizer,
    text_or_texts: str | Sequence[str],
    task: TwoAnswerTask | None = None,
    batch_size: int = 8,
    truncate: bool = False,
) -> Prediction | list[Prediction]:
    """The task's answer (earnings direction by default) for one statement
    (-> ``Prediction``) or many (-> ``list[Prediction]``), in left-padded batches of
    ``batch_size``. ``task``: any :class:`TwoAnswerTask` (default: ``EarningsTask``).

    The model is put in eval mode for the call and restored after.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    if task is not None and not all(callable(getattr(task, name, None)) for name in ("encode", "predictions")):
        raise InputError(f"task must be an EarningsTask (or None for the default), got {type(task).__name__}")
    task = task if task is not None else EarningsTask(tokenizer)
    texts = _check_texts(text_or_texts)
    limit = context_length(model)
    # Encode everything first so bad input fails before any model work.
    encoded = task.encode(texts, max_length=limit, truncate=truncate)
    results: list[Prediction] = []
    for start in range(0, len(texts), batch_size):
        batch = _trim_left_padding({k: v[start:start + batch_size] for k, v in encoded.items()})
        batch = {k: v.to(model_device(model)) for k, v in batch.items()}
        results.extend(task.predictions(task.answer_logits(model, batch), batch["attention_mask"]))
    return results[0] if isinstance(text_or_texts, str) else results
