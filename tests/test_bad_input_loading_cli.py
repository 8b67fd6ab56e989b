"""Bad-input catalogue: loading models and the ``finwidget report`` command line.

Every case is something a user can realistically hand finwidget: an encoder or an
encoder-decoder folder, weights that do not fit their config, a damaged download, a
folder without its tokenizer, a device this machine lacks, a statement file saved as
UTF-16, an output folder that does not exist, ... Each asserts finwidget's own error
class with a message naming the file or value (or, for the CLI, exit code 2 and one
line on stderr, no traceback), and that nothing else changed: the files given are
byte-identical afterwards, and a model already loaded in the process is bit-identical
with no hook left (``bad_input_helpers``). The other areas add their catalogues as
``tests/test_bad_input_<area>.py`` in the same style.

No hub is reachable: every folder is built here from config objects (tiny random
weights) next to the demo tokenizer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bad_input_helpers import assert_model_untouched, assert_one_line_error, folder_digest
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    BertLMHeadModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Model,
    RobertaConfig,
    RobertaForMaskedLM,
    T5Config,
    T5ForConditionalGeneration,
    ViTConfig,
)

from finwidget import cli
from finwidget.demo import MODEL_DIR, make_statements
from finwidget.errors import InputError, ModelLoadError, OutputError
from finwidget.loading import load_model, resolve_device

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 64}
WEIGHTS = "model.safetensors"
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- folders
@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory, tokenizer):
    """A tiny random Qwen2 (untied LM head) with the demo tokenizer: it loads cleanly."""
    folder = tmp_path_factory.mktemp("qwen2-base")
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), tie_word_embeddings=False, **TINY)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def witness():
    """A model already loaded in the process: a failed load must leave it as it was."""
    torch.manual_seed(1)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=64, **TINY)).eval()


def _copy(base: Path, tmp: Path) -> Path:
    folder = tmp / "model"
    shutil.copytree(base, folder)
    return folder


def _edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _edit_weights(folder: Path, edit) -> Path:
    tensors = load_file(folder / WEIGHTS)
    edit(tensors)
    save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})
    return folder


def _save_other(model, tokenizer, tmp: Path) -> Path:
    folder = tmp / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _remove_tokenizer(folder: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    return folder


def _write(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder


def _truncate(folder: Path, keep) -> Path:
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: keep(len(data))])
    return folder


def _shard_index(folder: Path, shard_names) -> Path:
    keys = list(load_file(folder / WEIGHTS))
    (folder / WEIGHTS).unlink()
    index = {"metadata": {}, "weight_map": {k: shard_names[i % len(shard_names)] for i, k in enumerate(keys)}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def _sharded(base: Path, tmp: Path, tok, damage=None) -> Path:
    """The base model saved in several shards; ``damage(last_shard_path)`` then spoils one."""
    from transformers import AutoModelForCausalLM

    folder = tmp / "model"
    AutoModelForCausalLM.from_pretrained(base).save_pretrained(folder, max_shard_size="40KB")
    tok.save_pretrained(folder)
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (folder / WEIGHTS).exists()
    if damage is not None:
        damage(shards[-1])
    return folder


def _bert(tok, **options):
    return BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, **options)


def _bigger_vocab_than_model(base, tmp, tok):
    folder = tmp / "model"
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=100, **TINY)).save_pretrained(folder)
    tok.save_pretrained(folder)  # 425 tokens for a 100-row embedding
    return folder


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 123456\n"

# (id, build(base, tmp, tokenizer) -> path, load_model kwargs, error, message pattern)
LOADING_CASES = [
    # --- not a decoder-only causal LM
    ("bert-masked-lm-folder", lambda b, t, k: _save_other(BertForMaskedLM(_bert(k)), k, t), {},
     ModelLoadError, r"'bert' encoder \(bidirectional attention, saved as BertForMaskedLM\)"),
    ("bert-lm-head-without-is-decoder", lambda b, t, k: _save_other(BertLMHeadModel(_bert(k)), k, t), {},
     ModelLoadError, r"'bert' encoder"),
    ("roberta-folder", lambda b, t, k: _save_other(RobertaForMaskedLM(RobertaConfig(
        vocab_size=len(k), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)), k, t),
     {}, ModelLoadError, r"'roberta' encoder"),
    ("t5-encoder-decoder", lambda b, t, k: _save_other(T5ForConditionalGeneration(T5Config(
        vocab_size=len(k), d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16)), k, t),
     {}, ModelLoadError, r"'t5' encoder-decoder model"),
    ("bart-encoder-decoder", lambda b, t, k: _save_other(BartForConditionalGeneration(BartConfig(
        vocab_size=len(k), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64)), k, t),
     {}, ModelLoadError, r"'bart' encoder-decoder model"),
    ("vision-model-config", lambda b, t, k: (ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                       intermediate_size=64).save_pretrained(t), t)[1],
     {}, ModelLoadError, r"'vit' model, which is not a causal language model"),
    # --- weights that would be freshly initialised
    ("lm-head-weight-missing", lambda b, t, k: _edit_weights(_copy(b, t), lambda w: w.pop("lm_head.weight")), {},
     ModelLoadError, r"no saved weights for its LM head \(lm_head\.weight\), so they would be freshly"),
    ("one-layer-weight-missing",
     lambda b, t, k: _edit_weights(_copy(b, t), lambda w: w.pop("model.layers.1.mlp.up_proj.weight")), {},
     ModelLoadError, r"no saved weights for 1 weight\(s\) \(model\.layers\.1\.mlp\.up_proj\.weight\)"),
    ("base-model-checkpoint-without-head", lambda b, t, k: _save_other(Qwen2Model(Qwen2Config(
        vocab_size=len(k), **TINY)), k, t), {}, ModelLoadError, r"LM head"),
    # --- config.json that does not fit the weights
    ("config-hidden-size-changed", lambda b, t, k: _edit_config(_copy(b, t), hidden_size=64), {},
     ModelLoadError, r"config\.json of .* does not fit its weights: \d+ weight\(s\) have another shape, e\.g\. "),
    ("config-vocab-size-changed", lambda b, t, k: _edit_config(_copy(b, t), vocab_size=500), {},
     ModelLoadError, r"does not fit its weights.*\[425, 32\] in the weights but \[500, 32\] by the config"),
    ("config-more-layers-than-weights",
     lambda b, t, k: _edit_config(_copy(b, t), num_hidden_layers=3, layer_types=None), {},
     ModelLoadError, r"no saved weights for \d+ weight\(s\) \(model\.layers\.2\..*num_hidden_layers=3"),
    ("config-fewer-layers-than-weights",
     lambda b, t, k: _edit_config(_copy(b, t), num_hidden_layers=1, layer_types=None), {},
     ModelLoadError, r"hold \d+ tensor\(s\) this config has no place for \(model\.layers\.1\..*num_hidden_layers=1"),
    ("config-layer-count-disagrees-with-layer-types",
     lambda b, t, k: _edit_config(_copy(b, t), num_hidden_layers=3), {},
     ModelLoadError, r"config\.json of model folder .* is damaged or inconsistent .*num_hidden_layers"),
    ("config-not-json", lambda b, t, k: _write(_copy(b, t), "config.json", b"{not json"), {},
     ModelLoadError, r"config\.json of model folder .* is damaged or inconsistent"),
    ("config-without-model-type", lambda b, t, k: _write(_copy(b, t), "config.json", b'{"hidden_size": 32}'), {},
     ModelLoadError, r"config\.json of model folder .* is damaged or inconsistent"),
    ("config-unknown-model-type", lambda b, t, k: _edit_config(_copy(b, t), model_type="qwen9"), {},
     ModelLoadError, r"config\.json of model folder .* is damaged or inconsistent.*qwen9"),
    # --- damaged weights files
    ("weights-random-bytes", lambda b, t, k: _write(_copy(b, t), WEIGHTS, os.urandom(4096)), {},
     ModelLoadError, r"the weights file '.*model\.safetensors' is corrupt or truncated \(SafetensorError"),
    ("weights-truncated-to-half", lambda b, t, k: _truncate(_copy(b, t), lambda n: n // 2), {},
     ModelLoadError, r"model\.safetensors' is corrupt or truncated"),
    ("weights-missing-last-bytes", lambda b, t, k: _truncate(_copy(b, t), lambda n: n - 16), {},
     ModelLoadError, r"model\.safetensors' is corrupt or truncated"),
    ("weights-empty-file", lambda b, t, k: _write(_copy(b, t), WEIGHTS, b""), {},
     ModelLoadError, r"model\.safetensors' is corrupt or truncated"),
    ("weights-git-lfs-pointer", lambda b, t, k: _write(_copy(b, t), WEIGHTS, LFS_POINTER), {},
     ModelLoadError, r"model\.safetensors' is corrupt or truncated"),
    ("weights-hold-nan", lambda b, t, k: _edit_weights(_copy(b, t), lambda w: w["model.norm.weight"].fill_(
        float("nan"))), {}, ModelLoadError, r"are damaged: model\.norm\.weight holds 32 NaN or infinite value\(s\) of 32"),
    ("weights-hold-infinity", lambda b, t, k: _edit_weights(_copy(b, t), lambda w: w["lm_head.weight"].__setitem__(
        (0, 0), float("inf"))), {}, ModelLoadError, r"lm_head\.weight holds 1 NaN or infinite value\(s\)"),
    ("weights-file-missing", lambda b, t, k: ((_copy(b, t) / WEIGHTS).unlink(), t / "model")[1], {},
     ModelLoadError, r"could not load the model weights from .*no file named model\.safetensors"),
    ("pytorch-bin-random-bytes",
     lambda b, t, k: ((_copy(b, t) / WEIGHTS).unlink(), _write(t / "model", "pytorch_model.bin", os.urandom(512)))[1],
     {}, ModelLoadError, r"could not load the model weights from"),
    ("sharded-index-names-missing-shard",
     lambda b, t, k: _shard_index(_copy(b, t), ["model-00001-of-00002.safetensors"]), {},
     ModelLoadError, r"lists shard\(s\) missing from the folder: model-00001-of-00002\.safetensors"),
    ("last-shard-truncated", lambda b, t, k: _sharded(b, t, k, lambda p: p.write_bytes(p.read_bytes()[:-8])), {},
     ModelLoadError, r"the weights file '.*model-\d+-of-\d+\.safetensors' is corrupt or truncated"),
    ("sharded-index-not-json", lambda b, t, k: _write(_shard_index(_copy(b, t), ["model-00001-of-00001.safetensors"]),
                                                      "model.safetensors.index.json", b"{oops"), {},
     ModelLoadError, r"the weights index '.*model\.safetensors\.index\.json' is unreadable"),
    # --- tokenizers
    ("tokenizer-files-missing", lambda b, t, k: _remove_tokenizer(_copy(b, t)), {},
     ModelLoadError, r"has no tokenizer files .*copy the tokenizer files"),
    ("tokenizer-json-corrupt", lambda b, t, k: _write(_copy(b, t), "tokenizer.json", b"{garbage"), {},
     ModelLoadError, r"could not load the tokenizer from .*damaged or missing"),
    ("tokenizer-bigger-than-embedding", _bigger_vocab_than_model, {},
     ModelLoadError, r"tokenizer .* has 425 tokens but the model's embedding only 100 rows"),
    # --- the name or path
    ("path-is-the-weights-file", lambda b, t, k: _copy(b, t) / WEIGHTS, {},
     ModelLoadError, r"model\.safetensors' is a file; pass the folder"),
    ("folder-does-not-exist", lambda b, t, k: t / "no-such-model", {},
     ModelLoadError, r"no-such-model' does not exist"),
    ("folder-without-config", lambda b, t, k: t, {}, ModelLoadError, r"has no config\.json"),
    ("name-is-none", lambda b, t, k: None, {}, ModelLoadError, r"non-empty string or path, got None"),
    ("name-is-an-int", lambda b, t, k: 42, {}, ModelLoadError, r"non-empty string or path, got 42"),
    ("name-is-blank", lambda b, t, k: "   ", {}, ModelLoadError, r"non-empty string or path, got '   '"),
    # --- devices
    ("device-gpu", lambda b, t, k: b, {"device": "gpu"}, ModelLoadError,
     r"unknown device 'gpu' \(did you mean 'cuda'\?\)"),
    ("device-tpu", lambda b, t, k: b, {"device": "tpu"}, ModelLoadError, r"unknown device 'tpu'; use 'auto', 'cpu'"),
    ("device-none", lambda b, t, k: b, {"device": None}, ModelLoadError, r"device must be a string, got None"),
    ("device-int", lambda b, t, k: b, {"device": 0}, ModelLoadError, r"device must be a string, got 0 \(int\)"),
    ("device-empty", lambda b, t, k: b, {"device": ""}, ModelLoadError, r"unknown device ''"),
    ("device-upper-case", lambda b, t, k: b, {"device": "CPU"}, ModelLoadError,
     r"unknown device 'CPU' \(did you mean 'cpu'\?\)"),
    ("device-meta", lambda b, t, k: b, {"device": "meta"}, ModelLoadError, r"'meta' holds no weights"),
    ("device-checked-before-damaged-weights", lambda b, t, k: _write(_copy(b, t), WEIGHTS, b""), {"device": "gpu"},
     ModelLoadError, r"unknown device 'gpu'"),
    # --- dtypes and options
    ("dtype-misspelt", lambda b, t, k: b, {"device": "cpu", "dtype": "float13"}, ModelLoadError,
     r"unknown dtype 'float13'"),
    ("dtype-none", lambda b, t, k: b, {"device": "cpu", "dtype": None}, ModelLoadError, r"unknown dtype None"),
    ("dtype-integer-torch", lambda b, t, k: b, {"device": "cpu", "dtype": torch.int8}, ModelLoadError,
     r"dtype torch\.int8 is not a floating-point type"),
    ("dtype-bits-as-int", lambda b, t, k: b, {"device": "cpu", "dtype": 16}, ModelLoadError, r"unknown dtype 16"),
    ("load-in-4bit-on-cpu", lambda b, t, k: b, {"device": "cpu", "load_in_4bit": True}, ModelLoadError,
     r"load_in_4bit=True needs a CUDA GPU, but the device is 'cpu'"),
    ("output-loading-info-kwarg", lambda b, t, k: b, {"device": "cpu", "output_loading_info": True},
     ModelLoadError, r"does not take output_loading_info="),
    ("ignore-mismatched-sizes-kwarg", lambda b, t, k: b, {"device": "cpu", "ignore_mismatched_sizes": True},
     ModelLoadError, r"does not take ignore_mismatched_sizes="),
]


def _missing_cuda_device() -> str:
    """A CUDA device this machine does not have: 'cuda' without CUDA, else one past the last GPU."""
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


LOADING_CASES += [
    ("device-cuda-this-machine-lacks", lambda b, t, k: b, {"device": _missing_cuda_device()}, ModelLoadError,
     r"device 'cuda(:\d+)?' (asks for a CUDA GPU, but|does not exist)"),
    ("device-cuda-index-too-high", lambda b, t, k: b, {"device": "cuda:64"}, ModelLoadError,
     r"device 'cuda:64' (asks for a CUDA GPU, but|does not exist)"),
]


def _assert_one_clean_error(err: BaseException) -> None:
    """One error: no chained torch/transformers/safetensors exception shown under it."""
    assert err.__cause__ is None
    assert err.__context__ is None or err.__suppress_context__


@pytest.mark.parametrize(("build", "kwargs", "error", "pattern"),
                         [pytest.param(*case[1:], id=case[0]) for case in LOADING_CASES])
def test_bad_model_folder_or_option_is_refused_by_name(build, kwargs, error, pattern, base_folder, tokenizer,
                                                       witness, tmp_path):
    target = build(base_folder, tmp_path, tokenizer)
    files = target if isinstance(target, Path) and target.exists() else None
    digest = folder_digest(files) if files is not None else None
    base_digest = folder_digest(base_folder)
    with pytest.raises(error, match=pattern) as info:
        assert_model_untouched(witness, lambda: load_model(target, **kwargs), what="a failed load")
    _assert_one_clean_error(info.value)
    if files is not None:
        assert folder_digest(files) == digest, "load_model changed the user's files"
    assert folder_digest(base_folder) == base_digest


def test_the_base_folder_of_the_catalogue_loads(base_folder):
    """The control: every refusal above comes from the one change made, not a broken base."""
    model, tokenizer = load_model(base_folder, device="cpu")
    assert type(model).__name__ == "Qwen2ForCausalLM" and len(tokenizer) == 425


def test_a_sharded_folder_loads(base_folder, tmp_path, tokenizer):
    """The control for the shard cases: every shard is read, the model is the base model."""
    folder = _sharded(base_folder, tmp_path, tokenizer)
    model, _ = load_model(folder, device="cpu")
    reference, _ = load_model(base_folder, device="cpu")
    for (name, value), (_, expected) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(value, expected), name


def test_mps_without_mps_is_refused():
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS, so 'mps' is a valid device here")
    with pytest.raises(ModelLoadError, match=r"device 'mps' needs Apple's MPS"):
        resolve_device("mps")


def test_cuda_index_past_the_last_gpu_is_refused(monkeypatch):
    """On a machine with one GPU (simulated: no GPU here), 'cuda:1' names the GPUs there are."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ModelLoadError, match=r"device 'cuda:1' does not exist: this machine has 1 CUDA GPU\(s\), "
                                             r"cuda:0 to cuda:0"):
        resolve_device("cuda:1")
    assert resolve_device("cuda:0") == "cuda:0" and resolve_device("auto") == "cuda"


def test_cpu_device_spellings_resolve():
    assert resolve_device("cpu") == resolve_device("cpu:0") == resolve_device(torch.device("cpu")) == "cpu"


def test_loading_does_not_import_the_demo_layer():
    code = "import sys, finwidget.loading; bad = [m for m in sys.modules if m.startswith('finwidget.demo')]; " \
           "assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_load_demo_model_lives_in_demo_and_checks_its_device():
    import finwidget
    import finwidget.demo

    assert finwidget.load_demo_model is finwidget.demo.load_demo_model
    with pytest.raises(ModelLoadError, match="unknown device 'gpu'"):
        finwidget.demo.load_demo_model(device="gpu")


# ---------------------------------------------------------------------------- CLI
@pytest.fixture
def no_model_work(monkeypatch):
    """Fail the test if the CLI gets as far as loading a model."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the CLI loaded a model before refusing the input")

    monkeypatch.setattr("finwidget.demo.load_demo_model", refuse)
    monkeypatch.setattr("finwidget.loading.load_model", refuse)


def _run_cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _statement(tmp_path: Path, data: bytes, name: str = "statement.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


DEMO_TEXT = make_statements(1, seed=7)[0].text

# (id, statement bytes, phrases of the one-line error)
STATEMENT_FILE_CASES = [
    ("binary-bytes", bytes(range(256)) * 4, ["is binary (it holds NUL bytes)"]),
    ("utf-16-with-bom", DEMO_TEXT.encode("utf-16"), ["is UTF-16 text; re-save it as UTF-8"]),
    ("utf-16-be-with-bom", b"\xfe\xff" + DEMO_TEXT.encode("utf-16-be"), ["is UTF-16 text"]),
    ("utf-16-le-without-bom", DEMO_TEXT.encode("utf-16-le"), ["looks like UTF-16 text without a byte-order mark"]),
    ("utf-32", DEMO_TEXT.encode("utf-32"), ["is UTF-32 text"]),
    ("latin-1-accent", "Chiffre d'affaires: variation +1 234 €, société".encode("latin-1", errors="replace"),
     ["is not UTF-8 (byte 0x", "re-save it as UTF-8"]),
    ("cp1252-euro-sign", "Revenue: change +1,234 €".encode("cp1252"), ["is not UTF-8 (byte 0x80 at offset 23)"]),
    ("utf-8-encoded-surrogate", b"Revenue: change +1,234 \xed\xa0\x80", ["is not UTF-8 (byte 0xed at offset 23)"]),
    ("pdf-document", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", ["is a PDF document, not plain text"]),
    ("word-docx", b"PK\x03\x04\x14\x00\x06\x00" + b"[Content_Types].xml", ["is a zip archive"]),
    ("old-excel-xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 32, ["is an old Office document"]),
    ("rtf-document", b"{\\rtf1\\ansi Revenue: change +1,234}", ["is an RTF document"]),
    ("empty-file", b"", ["is empty"]),
    ("whitespace-only", b" \n\t\r\n  ", ["is empty"]),
]


@pytest.mark.parametrize(("data", "phrases"), [pytest.param(*c[1:], id=c[0]) for c in STATEMENT_FILE_CASES])
def test_statement_file_that_is_not_utf8_text_is_one_line(data, phrases, tmp_path, capsys, no_model_work):
    statement = _statement(tmp_path, data)
    code, out, err = _run_cli(["report", "--demo", "--statement", statement, tmp_path / "out.html"], capsys)
    assert code == cli.EXIT_USER_ERROR and not out
    assert_one_line_error(err, "finwidget: error:", str(statement), *phrases)
    assert statement.read_bytes() == data
    assert not (tmp_path / "out.html").exists()


def test_statement_file_missing_or_a_folder(tmp_path, capsys, no_model_work):
    code, _, err = _run_cli(["report", "--demo", "--statement", tmp_path / "nope.txt", tmp_path / "o.html"], capsys)
    assert code == 2
    assert_one_line_error(err, "nope.txt' does not exist")
    code, _, err = _run_cli(["report", "--demo", "--statement", tmp_path, tmp_path / "o.html"], capsys)
    assert code == 2
    assert_one_line_error(err, "is a folder; pass a text file")


def test_utf8_byte_order_mark_is_dropped_not_read_as_text(tmp_path):
    plain = _statement(tmp_path, DEMO_TEXT.encode("utf-8"), "plain.txt")
    marked = _statement(tmp_path, b"\xef\xbb\xbf" + DEMO_TEXT.encode("utf-8"), "marked.txt")
    assert cli.read_statement_file(marked) == cli.read_statement_file(plain) == DEMO_TEXT


def test_error_classes_of_the_cli_checks(tmp_path):
    """Called from Python, the checks raise finwidget's classes (the CLI prints them as one line)."""
    with pytest.raises(InputError, match="UTF-16"):
        cli.read_statement_file(_statement(tmp_path, "x".encode("utf-16")))
    with pytest.raises(OutputError, match="does not exist") as info:
        cli.check_output_path(tmp_path / "missing" / "out.html")
    assert isinstance(info.value, OSError)


# (id, output path relative to tmp_path (a callable making it), phrases)
def _existing_folder(tmp):
    (tmp / "page.html").mkdir()
    return tmp / "page.html"


def _parent_is_a_file(tmp):
    (tmp / "notes.txt").write_text("x")
    return tmp / "notes.txt" / "out.html"


OUTPUT_PATH_CASES = [
    ("missing-folder", lambda t: t / "reports" / "2024" / "out.html", ["'reports/2024' of the output does not exist"]),
    ("parent-is-a-file", _parent_is_a_file, ["notes.txt' is a file, not a folder"]),
    ("output-is-a-folder", _existing_folder, ["page.html' is a folder"]),
    ("not-an-html-name", lambda t: t / "out.txt", ["the output must be an .html file"]),
    ("no-suffix", lambda t: t / "report", ["the output must be an .html file"]),
]


@pytest.mark.parametrize(("make", "phrases"), [pytest.param(*c[1:], id=c[0]) for c in OUTPUT_PATH_CASES])
def test_bad_output_path_is_refused_before_any_model_work(make, phrases, tmp_path, capsys, no_model_work,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = make(tmp_path).relative_to(tmp_path)
    code, out, err = _run_cli(["report", "--demo", output], capsys)
    assert code == 2 and not out
    assert_one_line_error(err, "finwidget: error:", *phrases)


def test_read_only_output_folder(tmp_path, capsys, no_model_work):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; test_folder_refusing_new_files covers the same refusal")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, _, err = _run_cli(["report", "--demo", folder / "out.html"], capsys)
    finally:
        folder.chmod(0o755)
    assert code == 2
    assert_one_line_error(err, "cannot write in the folder", "Permission denied")


def test_read_only_existing_output_file(tmp_path, capsys, no_model_work):
    if os.geteuid() == 0:
        pytest.skip("root may write read-only files, so for root the file is writable")
    page = tmp_path / "out.html"
    page.write_text("old page")
    page.chmod(0o444)
    code, _, err = _run_cli(["report", "--demo", page], capsys)
    assert code == 2
    assert_one_line_error(err, "exists and is read-only")
    assert page.read_text() == "old page"


@pytest.mark.parametrize(("errno_name", "strerror"), [("EACCES", "Permission denied"),
                                                     ("EROFS", "Read-only file system"),
                                                     ("ENOSPC", "No space left on device")])
def test_folder_refusing_new_files(errno_name, strerror, tmp_path, capsys, no_model_work, monkeypatch):
    """The OS refuses to create a file in the output folder (for any user, root too)."""
    import errno

    def refuse(*_args, **_kwargs):
        raise OSError(getattr(errno, errno_name), strerror)

    monkeypatch.setattr(cli.tempfile, "mkstemp", refuse)
    code, _, err = _run_cli(["report", "--demo", tmp_path / "out.html"], capsys)
    assert code == 2
    assert_one_line_error(err, "cannot write in the folder", strerror)


def test_full_disk_is_refused_before_model_work(tmp_path, capsys, no_model_work, monkeypatch):
    monkeypatch.setattr(cli.shutil, "disk_usage", lambda _path: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    code, _, err = _run_cli(["report", "--demo", tmp_path / "out.html"], capsys)
    assert code == 2
    assert_one_line_error(err, "has 100 bytes free, the page needs at least")


# (id, argv after "report", phrases)
OPTION_CASES = [
    ("model-without-statement", ["--model", "some/folder"], ["--model needs --statement FILE"]),
    ("seed-with-model", ["--model", "x/y", "--statement", "s.txt", "--seed", "3"], ["--seed chooses the generated"]),
    ("seed-with-statement", ["--demo", "--statement", "s.txt", "--seed", "3"], ["only applies with --demo"]),
    ("device-gpu", ["--demo", "--device", "gpu"], ["unknown device 'gpu' (did you mean 'cuda'?)"]),
    ("device-tpu", ["--demo", "--device", "tpu"], ["unknown device 'tpu'"]),
    ("device-cuda-missing", ["--demo", "--device", _missing_cuda_device()], ["device 'cuda"]),
    ("dtype-with-demo", ["--demo", "--dtype", "float16"], ["--dtype and --load-in-4bit only apply with --model"]),
    ("4bit-with-demo", ["--demo", "--load-in-4bit"], ["only apply with --model"]),
]


@pytest.mark.parametrize(("argv", "phrases"), [pytest.param(*c[1:], id=c[0]) for c in OPTION_CASES])
def test_bad_option_is_one_line_before_model_work(argv, phrases, tmp_path, capsys, no_model_work, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.txt").write_text(DEMO_TEXT, encoding="utf-8")
    code, out, err = _run_cli(["report", *argv, "out.html"], capsys)
    assert code == 2 and not out
    assert_one_line_error(err, "finwidget: error:", *phrases)


@pytest.mark.parametrize("argv", [
    pytest.param([], id="no-command"),
    pytest.param(["report", "out.html"], id="neither-demo-nor-model"),
    pytest.param(["report", "--demo", "--model", "m", "out.html"], id="demo-and-model"),
    pytest.param(["report", "--demo", "--seed", "seven", "out.html"], id="seed-not-an-int"),
    pytest.param(["report", "--demo", "--truncate=yes", "out.html"], id="flag-given-a-value"),
    pytest.param(["report", "--model", "m", "--dtype", "float13", "out.html"], id="dtype-not-a-choice"),
])
def test_usage_errors_exit_2_without_traceback(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err.splitlines()[-1]


def test_advice_names_the_cli_options_not_the_python_arguments(base_folder, tmp_path, capsys, monkeypatch):
    """Loading's advice says device='cpu' / load_in_4bit=True; through the CLI it says --device cpu / ..."""
    statement = _statement(tmp_path, DEMO_TEXT.encode())
    if not torch.cuda.is_available():
        code, _, err = _run_cli(["report", "--model", base_folder, "--device", "cuda", "--statement", statement,
                                 tmp_path / "o.html"], capsys)
        line = assert_one_line_error(err, "use --device cpu")
        assert "device=" not in line
    code, _, err = _run_cli(["report", "--model", base_folder, "--device", "cpu", "--load-in-4bit",
                             "--statement", statement, tmp_path / "o.html"], capsys)
    assert code == 2
    line = assert_one_line_error(err, "--load-in-4bit needs a CUDA GPU, but the device is 'cpu'")
    assert "load_in_4bit" not in line
    monkeypatch.setattr("finwidget.loading.resolve_device", lambda _device: "cuda")  # as on a GPU machine
    monkeypatch.setattr(torch.nn.Module, "to", lambda *_a, **_k: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")))
    code, _, err = _run_cli(["report", "--model", base_folder, "--device", "cuda", "--statement", statement,
                             tmp_path / "o.html"], capsys)
    assert code == 2
    assert_one_line_error(err, "OutOfMemoryError: CUDA out of memory", "try --dtype bfloat16, --load-in-4bit, "
                          "or --device cpu")


def test_model_folder_refused_by_loading_is_one_line(tmp_path, capsys, tokenizer):
    folder = _save_other(BertForMaskedLM(_bert(tokenizer)), tokenizer, tmp_path)
    statement = _statement(tmp_path, DEMO_TEXT.encode())
    code, _, err = _run_cli(["report", "--model", folder, "--statement", statement, tmp_path / "o.html"], capsys)
    assert code == 2
    assert_one_line_error(err, "'bert' encoder")


@pytest.fixture(scope="module")
def short_context_folder(tmp_path_factory, tokenizer):
    """A tiny Qwen2 with a 32-token context: the demo statement does not fit."""
    folder = tmp_path_factory.mktemp("short-context")
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), **{**TINY, "max_position_embeddings": 32})
                     ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_too_long_statement_advises_the_cli_flag_and_the_flag_works(short_context_folder, tmp_path, capsys):
    statement = _statement(tmp_path, DEMO_TEXT.encode())
    output = tmp_path / "out.html"
    base = ["report", "--model", short_context_folder, "--device", "cpu", "--statement", statement]
    code, _, err = _run_cli([*base, output], capsys)
    assert code == 2
    line = assert_one_line_error(err, "longer than the model's context of 32 tokens", "--truncate")
    assert "truncate=True" not in line
    assert not output.exists()
    code, out, _ = _run_cli([*base, "--truncate", output], capsys)
    assert code == 0 and out.strip() == f"wrote {output}"
    assert output.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.fixture(scope="module")
def overflowing_head_folder(tmp_path_factory, tokenizer):
    """A Qwen2 whose (finite) LM head is 1e38 everywhere: float32 logits overflow to
    infinity, so the logit difference is inf - inf = NaN although every weight is finite."""
    folder = tmp_path_factory.mktemp("overflowing-head")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), tie_word_embeddings=False,
                                         **{**TINY, "max_position_embeddings": 1024}))
    with torch.no_grad():
        model.lm_head.weight.fill_(1e38)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_non_finite_answer_writes_no_page(overflowing_head_folder, tmp_path, capsys):
    statement = _statement(tmp_path, DEMO_TEXT.encode())
    output = tmp_path / "out.html"
    code, _, err = _run_cli(["report", "--model", overflowing_head_folder, "--device", "cpu", "--statement", statement,
                             output], capsys)
    assert code == 2
    line = assert_one_line_error(err, "finwidget: error:")
    assert "finite" in line or "NaN" in line or "nan" in line, line
    assert not output.exists() and list(tmp_path.glob(".*html")) == []


def test_failed_write_keeps_the_old_page_and_leaves_no_temp_file(tmp_path, capsys, monkeypatch):
    import errno

    page = tmp_path / "out.html"
    page.write_text("old page")

    def disk_full(explorer, path, *args, **kwargs):
        Path(path).write_text("half a pa")
        raise OSError(errno.ENOSPC, "No space left on device")

    # the report page is written by the export module's writer
    monkeypatch.setattr("finwidget.widgets.export.save_explorer_html", disk_full)
    code, _, err = _run_cli(["report", "--demo", page], capsys)
    assert code == 2
    assert_one_line_error(err, "could not write", "No space left on device")
    assert page.read_text() == "old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.html"]


def test_page_json_refusing_a_non_finite_number_is_one_line(tmp_path, capsys, monkeypatch):
    """The page writer emits strict JSON; its refusal of a NaN reaches the user as one line, no page."""

    def strict_json_refuses(explorer, path, *args, **kwargs):
        Path(path).write_text("<!DOCTYPE html>")
        raise ValueError("Out of range float values are not JSON compliant: nan")

    monkeypatch.setattr("finwidget.widgets.export.save_explorer_html", strict_json_refuses)
    code, _, err = _run_cli(["report", "--demo", tmp_path / "out.html"], capsys)
    assert code == 2
    assert_one_line_error(err, "would hold a non-finite number (NaN or infinity)")
    assert list(tmp_path.iterdir()) == []


def test_interrupt_exits_130_without_traceback(tmp_path, capsys, monkeypatch):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("finwidget.demo.load_demo_model", interrupted)
    code, _, err = _run_cli(["report", "--demo", tmp_path / "out.html"], capsys)
    assert code == cli.EXIT_INTERRUPTED
    assert_one_line_error(err, "finwidget: interrupted")
    assert list(tmp_path.iterdir()) == []


def test_demo_report_is_written_whole_with_the_usual_file_mode(tmp_path, capsys):
    """The control for the refusals above: the same command with good input writes the page."""
    output = tmp_path / "out.html"
    code, out, _ = _run_cli(["report", "--demo", output], capsys)
    assert code == 0 and out.strip() == f"wrote {output}"
    assert output.read_text(encoding="utf-8").rstrip().endswith("</html>")
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.html"]


def test_installed_entry_point_prints_one_line_and_exits_2(tmp_path):
    """Through the real process: the error line, exit code 2, no traceback."""
    statement = _statement(tmp_path, DEMO_TEXT.encode("utf-16"))
    result = subprocess.run(
        [sys.executable, "-m", "finwidget.cli", "report", "--demo", "--statement", str(statement),
         str(tmp_path / "missing" / "out.html")],
        check=False, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )
    assert result.returncode == 2 and not result.stdout
    # the output path is checked first, so its error is the one reported
    assert_one_line_error(result.stderr, "finwidget: error:", "missing' of the output does not exist")


# ---------------------------------------------------------------------------- strict JSON
@pytest.mark.parametrize(("value", "named"), [
    pytest.param({"prediction": {"clean": {"logit_diff": float("nan")}}}, "report.prediction.clean.logit_diff=nan",
                 id="nested-nan"),
    pytest.param([1.0, float("inf")], "report[1]=inf", id="infinity-in-a-list"),
    pytest.param({"scores": (0.5, -float("inf"))}, "report.scores[1]=-inf", id="minus-infinity-in-a-tuple"),
    pytest.param({"loss": [float("nan")] * 5}, "report.loss[0]=nan, report.loss[1]=nan, report.loss[2]=nan and 2 more",
                 id="many-nans-named-briefly"),
])
def test_strict_json_names_the_non_finite_number(value, named):
    from finwidget.strict_json import strict_dumps

    with pytest.raises(OutputError, match=re.escape(named)):
        strict_dumps(value, "report")


def test_strict_json_writes_finite_values_as_json_does():
    from finwidget.strict_json import strict_dumps

    value = {"a": [1, 2.5, -0.0, 1e300], "b": {"c": None, "d": "x"}}
    assert strict_dumps(value, indent=1) == json.dumps(value, indent=1)


def test_output_and_statement_file_are_refused_before_torch_is_even_imported(tmp_path):
    """'Before any model work' measured strictly: the refusal comes before torch is imported."""
    statement = _statement(tmp_path, b"\xff\xfeR\x00e\x00")
    code = (
        "import sys\nfrom finwidget import cli\n"
        f"first = cli.main(['report', '--demo', {str(tmp_path / 'missing' / 'o.html')!r}])\n"
        f"second = cli.main(['report', '--model', 'm', '--statement', {str(statement)!r}, "
        f"{str(tmp_path / 'o.html')!r}])\n"
        "assert (first, second) == (2, 2), (first, second)\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "of the output does not exist" in lines[0] and "is UTF-16 text" in lines[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_finite_weights_whose_sum_overflows_are_not_called_damaged(dtype):
    """The fast path sums each weight; finite values overflowing that sum must still pass."""
    from finwidget.loading import _non_finite_count

    big = torch.full((64,), torch.finfo(dtype).max, dtype=dtype)
    assert _non_finite_count(big) == 0
    big[3], big[7] = float("nan"), float("-inf")
    assert _non_finite_count(big) == 2
