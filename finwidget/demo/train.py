"""Train the demo model: a small Qwen2 that learned the planted earnings rule.

    python -m finwidget.demo.train                      # the shipped model, into finwidget/demo/model/
    python -m finwidget.demo.train --steps 50 --out /tmp/try --hidden 64
    python -m finwidget.demo.train --layout mixed --out finwidget/demo/layouts_model   # the layouts model

The model is transformers' own ``Qwen2ForCausalLM`` (grouped-query attention with
more query heads than key/value heads, rotary position embeddings, RMSNorm), built
from a config, never downloaded. Each step draws a fresh batch of statements
(``make_statements(batch_size, seed=training_seed(seed, step), distractors=...)``),
builds the prompts with ``EarningsTask`` and trains with cross-entropy on the answer
token only. A curriculum shows short statements first: during the first
``curriculum_steps`` steps the number of distractor line items grows from 0 to all 7;
afterwards every statement is complete. Training stops early once the validation
accuracy (complete statements) reaches ``stop_at_accuracy`` twice in a row after the
curriculum. The last layer runs only at the answer position
(``finwidget.demo.answer_forward``), which gives the same loss for about half the work.

Training is deterministic from ``--seed``: the same command on the same machine
gives bit-identical weights (torch's thread count is fixed with ``--threads``).

``--layout`` sets how the statements are written (``make_statements(layout=...)``):
``line`` for the shipped model, ``mixed`` (line, markdown table or aligned text table,
drawn per statement) for the layouts model in ``finwidget/demo/layouts_model/``, whose
tokenizer (``--tokenizer``, default: the folder of that layout's model) was learned from
mixed statements.

``--rule`` sets which rule labels the statements (``make_statements(rule=...)``):
``both`` (the planted rule) or ``net_income_only``. ``python -m finwidget.demo.finetune`` is
this command with the fine-tuned variant's defaults (``--init-from default --rule
net_income_only ...``): ``parse_command`` and ``main`` take other defaults for that.

Seeds: training batches use seeds ``1_000_000 * (seed + 1) + step``, the validation
set ``VALIDATION_SEED``, the tokenizer's corpus ``9_000_001``. The model card's
held-out accuracy uses seed 12345, none of these.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from finwidget.demo.answer_forward import answer_position_logits
from finwidget.demo.statements import LINE_ITEMS, RULE_ITEMS
from finwidget.errors import InputError
from finwidget.strict_json import strict_dumps

if TYPE_CHECKING:
    from transformers import Qwen2ForCausalLM

VALIDATION_SEED = 777
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


@dataclass
class TrainConfig:
    """Model shape and optimisation settings (defaults: the shipped demo model)."""

    layers: int = 2
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 512
    max_positions: int = 2048
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1.5e-3
    warmup: int = 50
    weight_decay: float = 0.01
    clip: float = 1.0
    seed: int = 0
    threads: int = 2
    validate_every: int = 100
    validation_size: int = 256
    stop_at_accuracy: float | None = 1.0  # stop once validation reaches this twice in a row
    min_steps: int = 400
    curriculum_steps: int = 600  # during these first steps, statements grow from 0 to 7 distractor items
    layout: str = "line"  # statement layout (make_statements): line, markdown, aligned or mixed
    init_from: str = ""  # a demo model folder or variant name to start from ("" = random initialisation); see warm_start
    keep_best: bool = False  # the command saves the weights of the best validation check (ties: the later)
    rule: str = "both"  # which rule labels the statements (make_statements(rule=...)): both or net_income_only


@dataclass
class TrainResult:
    """What ``train`` returns: the model, its tokenizer and the training record."""

    model: Qwen2ForCausalLM
    tokenizer: object
    losses: list[float] = field(default_factory=list)  # answer-token loss per step
    validation: list[dict] = field(default_factory=list)  # {"step", "accuracy", "loss"}
    seconds: float = 0.0
    steps_run: int = 0


def training_seed(seed: int, step: int) -> int:
    """Seed of the statements in training step ``step``."""
    return 1_000_000 * (seed + 1) + step


def curriculum_distractors(config: TrainConfig, step: int) -> int | None:
    """How many distractor line items the statements of ``step`` show (None: all).

    With ``curriculum_steps = K`` the first K steps go through 0, 1, ..., 7 distractors
    (every item outside the rule) in equal stages; afterwards (and with K = 0)
    statements are complete.
    """
    if step >= config.curriculum_steps:
        return None
    stages = len(LINE_ITEMS) - len(RULE_ITEMS) + 1
    return step * stages // config.curriculum_steps


def build_model(config: TrainConfig, tokenizer):
    """A freshly initialised ``Qwen2ForCausalLM`` of the given shape (float32)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if config.hidden % config.heads or config.heads % config.kv_heads:
        raise InputError(
            f"hidden ({config.hidden}) must be divisible by heads ({config.heads}) and heads by "
            f"kv_heads ({config.kv_heads})"
        )
    model_config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden,
        intermediate_size=config.ffn,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.kv_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    torch.manual_seed(config.seed)
    return Qwen2ForCausalLM(model_config).float()


def warm_start(model, tokenizer, source_dir: str | Path) -> dict:
    """Copy the weights of the demo model in ``source_dir`` into ``model`` (same shape but
    possibly another vocabulary; ``source_dir`` may also name a shipped variant of
    ``load_demo_model``, e.g. ``"default"``): every non-embedding weight as it is, and the embedding
    row of every token whose string is in both vocabularies; tokens the source
    vocabulary lacks keep their fresh initialisation. The embeddings are tied, so the
    LM head follows. Returns ``{"copied_tokens": int, "new_tokens": int}``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finwidget.demo import DEMO_MODEL_DIRS

    source_dir = DEMO_MODEL_DIRS.get(str(source_dir), source_dir)  # a variant name: that shipped model
    source = AutoModelForCausalLM.from_pretrained(source_dir, dtype=torch.float32)
    source_vocab = AutoTokenizer.from_pretrained(source_dir).get_vocab()
    target_vocab = tokenizer.get_vocab()
    own = model.state_dict()
    embedding_name = "model.embed_tokens.weight"
    with torch.no_grad():
        for name, weight in source.state_dict().items():
            if name in (embedding_name, "lm_head.weight"):
                continue
            if name not in own or own[name].shape != weight.shape:
                raise InputError(f"cannot start from {source_dir}: its {name} does not fit this model's shape")
            own[name].copy_(weight)
        shared = [(target_vocab[token], index) for token, index in source_vocab.items() if token in target_vocab]
        rows, source_rows = zip(*shared)
        own[embedding_name][list(rows)] = source.state_dict()[embedding_name][list(source_rows)]
    return {"copied_tokens": len(shared), "new_tokens": len(target_vocab) - len(shared)}


def _learning_rate(config: TrainConfig, step: int) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _batch(task, statements):
    batch = task.encode([s.text for s in statements])
    inc, dec = task.answer_token_ids
    targets = torch.tensor([inc if s.label == "increase" else dec for s in statements], dtype=torch.long)
    return batch, targets


def _answer_loss(model, batch, targets):
    """Cross-entropy of the answer token; the last layer runs only at the answer position
    (``answer_position_logits``, equal to the full forward pass)."""
    logits = answer_position_logits(model, batch["input_ids"], batch["attention_mask"]).float()
    return torch.nn.functional.cross_entropy(logits, targets), logits


def validate(model, task, statements, batch_size: int = 64) -> dict:
    """Accuracy (predicted label from the two answer logits) and answer-token loss."""
    from finwidget.task import eval_mode

    correct, loss_sum = 0, 0.0
    with torch.inference_mode(), eval_mode(model):
        for i in range(0, len(statements), batch_size):
            chunk = statements[i:i + batch_size]
            batch, targets = _batch(task, chunk)
            loss, logits = _answer_loss(model, batch, targets)
            diff = task.logit_diff(logits)
            predicted_increase = diff > 0
            correct += int((predicted_increase == (targets == task.answer_token_ids[0])).sum())
            loss_sum += float(loss) * len(chunk)
    return {"accuracy": correct / len(statements), "loss": loss_sum / len(statements)}


def _print_now(message: str) -> None:
    print(message, flush=True)


def default_tokenizer_dir(layout: str) -> Path:
    """The folder whose tokenizer a model of statements in ``layout`` uses: the shipped
    demo model's for ``"line"``, the layouts model's otherwise."""
    from finwidget.demo import LAYOUTS_MODEL_DIR, MODEL_DIR

    return Path(MODEL_DIR if layout == "line" else LAYOUTS_MODEL_DIR)


def train(config: TrainConfig, tokenizer=None, log=_print_now, on_validation=None) -> TrainResult:
    """Train a demo model with ``config``; returns the model (in eval mode) and its record.

    ``tokenizer``: default ``AutoTokenizer`` of ``default_tokenizer_dir(config.layout)``.
    ``on_validation``: called as ``on_validation(result, record)`` after every validation
    check (``record``: ``{"step", "accuracy", "loss"}``), e.g. to save a checkpoint.
    """
    from transformers import AutoTokenizer

    from finwidget.demo.statements import make_statements
    from finwidget.task import EarningsTask

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(default_tokenizer_dir(config.layout))
        task = EarningsTask(tokenizer)
        model = build_model(config, tokenizer)
        if config.init_from:
            log(f"starting from {config.init_from}: {warm_start(model, tokenizer, config.init_from)}")
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98),
                                      weight_decay=config.weight_decay)
        validation_set = make_statements(config.validation_size, VALIDATION_SEED, layout=config.layout,
                                         rule=config.rule)
        result = TrainResult(model=model, tokenizer=tokenizer)
        started = time.perf_counter()
        perfect_in_a_row = 0
        model.train()
        for step in range(config.steps):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, step)
            statements = make_statements(config.batch_size, training_seed(config.seed, step),
                                         distractors=curriculum_distractors(config, step), layout=config.layout,
                                         rule=config.rule)
            batch, targets = _batch(task, statements)
            loss, _ = _answer_loss(model, batch, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            result.losses.append(float(loss.detach()))
            result.steps_run = step + 1

            last = step + 1 == config.steps
            if config.validate_every and ((step + 1) % config.validate_every == 0 or last):
                record = {"step": step + 1, **validate(model, task, validation_set)}
                result.validation.append(record)
                model.train()
                elapsed = time.perf_counter() - started
                log(f"step {step + 1:5d}  train loss {sum(result.losses[-config.validate_every:]) / len(result.losses[-config.validate_every:]):.4f}  "
                    f"val loss {record['loss']:.4f}  val acc {record['accuracy']:.4f}  {elapsed:6.1f} s")
                if on_validation is not None:
                    result.seconds = elapsed
                    on_validation(result, record)
                if config.stop_at_accuracy is not None and record["accuracy"] >= config.stop_at_accuracy:
                    perfect_in_a_row += 1
                else:
                    perfect_in_a_row = 0
                if perfect_in_a_row >= 2 and step + 1 >= max(config.min_steps, config.curriculum_steps):
                    log(f"validation accuracy reached {config.stop_at_accuracy} twice in a row: stopping")
                    break
        result.seconds = time.perf_counter() - started
        model.eval()
        return result
    finally:
        torch.set_num_threads(previous_threads)


def save(result: TrainResult, config: TrainConfig, out: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write ``model.safetensors``, ``config.json``, ``generation_config.json``, the
    tokenizer files (copied from ``tokenizer_dir``, default
    ``default_tokenizer_dir(config.layout)``) and ``training_log.json`` into ``out``."""
    tokenizer_dir = Path(tokenizer_dir if tokenizer_dir is not None else default_tokenizer_dir(config.layout))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Room for the guide's bare `model.generate(input_ids)`: transformers' default
    # max_length (20) is shorter than any demo prompt.
    result.model.generation_config.max_new_tokens = 20
    result.model.save_pretrained(out, safe_serialization=True)
    (out / "model.safetensors").chmod(0o644)  # readable by everyone, like the other files
    if out.resolve() != tokenizer_dir.resolve():
        for name in TOKENIZER_FILES:
            shutil.copyfile(tokenizer_dir / name, out / name)
    record = {
        "config": asdict(config),
        "steps_run": result.steps_run,
        "seconds": round(result.seconds, 1),
        "final_train_loss": sum(result.losses[-20:]) / max(1, len(result.losses[-20:])),
        "validation": result.validation,
        "torch": torch.__version__,
    }
    (out / "training_log.json").write_text(strict_dumps(record, "training_log.json", indent=1) + "\n")
    return out


def parse_args(argv=None) -> tuple[TrainConfig, Path]:
    """The command line's ``(TrainConfig, output folder)``."""
    config, out, _ = parse_command(argv)
    return config, out


def parse_command(argv=None, defaults: TrainConfig | None = None, default_out: str | Path | None = None,
                  description: str = "Train the finwidget demo model (a small Qwen2) on synthetic statements.",
                  ) -> tuple[TrainConfig, Path, Path | None]:
    """The command line's ``(TrainConfig, output folder, tokenizer folder or None)``.

    ``defaults`` / ``default_out``: the settings and folder when no flag is given (default:
    the shipped model's, ``TrainConfig()`` into ``MODEL_DIR``); ``finwidget.demo.finetune``
    passes its own.
    """
    from finwidget.demo import MODEL_DIR

    defaults = defaults if defaults is not None else TrainConfig()
    default_out = default_out if default_out is not None else MODEL_DIR
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=str(default_out), help=f"output folder (default: {default_out})")
    parser.add_argument("--tokenizer", default=None,
                        help="folder of the tokenizer to train with (default: the shipped model's for --layout line, "
                             "finwidget/demo/layouts_model for the others)")
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if name == "stop_at_accuracy":
            parser.add_argument(flag, type=float, default=value,
                                help="stop when validation accuracy reaches this twice in a row (negative: never)")
        elif isinstance(value, bool):
            parser.add_argument(flag, action="store_true", default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    out = Path(args.pop("out"))
    tokenizer_dir = args.pop("tokenizer")
    if args["stop_at_accuracy"] is not None and args["stop_at_accuracy"] < 0:
        args["stop_at_accuracy"] = None
    return TrainConfig(**args), out, Path(tokenizer_dir) if tokenizer_dir else None


def main(argv=None, **command) -> None:
    """Run the command line; ``command``: ``parse_command``'s ``defaults``, ``default_out``,
    ``description`` (how ``finwidget.demo.finetune`` reuses this command)."""
    from transformers import AutoTokenizer

    config, out, tokenizer_dir = parse_command(argv, **command)
    tokenizer_dir = tokenizer_dir or default_tokenizer_dir(config.layout)
    _print_now(f"training the demo model: {asdict(config)}, tokenizer {tokenizer_dir}")
    best = {"accuracy": -1.0, "step": None}

    def keep_if_best(result, record):
        if record["accuracy"] >= best["accuracy"]:
            best.update(record)
            save(result, config, out, tokenizer_dir)
            _print_now(f"  best so far: saved to {out}")

    result = train(config, tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir),
                   on_validation=keep_if_best if config.keep_best else None)
    final = result.validation[-1] if result.validation else {}
    if config.keep_best and final and final["accuracy"] < best["accuracy"]:
        print(f"kept the weights of step {best['step']} (validation accuracy {best['accuracy']}) in {out}; "
              f"the run ended at step {result.steps_run} with {final['accuracy']}")
        return
    save(result, config, out, tokenizer_dir)
    print(f"saved to {out} after {result.steps_run} steps in {result.seconds:.0f} s; "
          f"validation accuracy {final.get('accuracy')}")


if __name__ == "__main__":
    main()
