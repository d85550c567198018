"""Bad input through ``da-embed compare``: one clear line naming the parameter, exit 2.

Every case calls :func:`da_embed.cli.main` in-process on a tiny GPT-2 or
Llama saved with ``save_pretrained`` (with a byte-level BPE tokenizer), and
checks: the exit status, that stderr is exactly one line starting with
``da-embed compare: error:`` (argparse's own prefix for the subcommand, kept
for every error so they all look alike), that the line names the parameter
and the problem, and that no traceback is printed.  Text in any script
(emoji, CJK, right-to-left, combining marks, undecodable bytes) must run.
"""

import pytest

from da_embed.cli import main
from da_embed.testing import tiny_gpt2, tiny_llama

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PREFIX = "da-embed compare: error: "
TOKENIZER_TEXT = ("The quick brown fox jumps over the lazy dog. Ünïcödé ταχύ 速い 🦊 مرحبا "
                  "שלום.\n") * 40
ENGLISH = "The quick brown fox jumps over the lazy dog and runs far away.\n" * 6
#: Scripts that must all run (each file is one of these, repeated).
UNICODE = {
    "emoji": "🦊🐕‍🦺👩🏽‍💻🇫🇷✨🔥 " * 30,
    "cjk": "日本語のテキストと中文文本，还有한국어 문장도 있습니다。" * 12,
    "rtl": "مرحبا بالعالم، هذا نص عربي. שלום עולם, זה טקסט בעברית. \u200fRTL\u200f " * 10,
    "combining": "e\u0301 a\u0308 n\u0303 Z\u0336\u0351\u0322a\u0337\u0315l\u0334g\u0335o\u0338 "
                 "\u0915\u094d\u0937 " * 30,
    "mixed": "\ufeffĈu vi parolas? Да. 日本語。 ✓ naïve — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🦊 עברית e\u0301 \t\x00\n" * 10,
}


def _save(folder, model):
    from da_embed.reference import train_tokenizer

    tokenizer = train_tokenizer(TOKENIZER_TEXT, vocab_size=300)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("gpt2"), tiny_gpt2(seed=0, initializer_range=0.4))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("llama"), tiny_llama(seed=0, initializer_range=0.4))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(ENGLISH, encoding="utf-8")
    return path


def run(capsys, *args):
    code = main(["compare", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def base_args(model_dir, corpus, tmp_path, **over):
    """A small valid command line; ``over`` replaces or adds options (None drops one)."""
    opts = {"--model": model_dir, "--corpus": corpus, "--tune-corpus": corpus,
            "--methods": "frozen,ekf", "--chunk": 8, "--context": 16, "--max-tokens": 120,
            "--members": 4, "--out": tmp_path / "out"}
    for k, v in over.items():
        opts["--" + k.replace("_", "-")] = v
    args = [x for k, v in opts.items() if v is not None for x in (k, v)]
    return [*args, "--no-progress"]


def assert_one_line_error(code, stderr, *needles, status=2):
    assert code == status, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ------------------------------------------------------------------- corpora
def test_empty_corpus(gpt2_dir, tmp_path, capsys):
    for name, text in [("empty.txt", ""), ("blank.txt", " \n\t\n")]:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        code, _, err = run(capsys, *base_args(gpt2_dir, path, tmp_path))
        assert_one_line_error(code, err, f"--corpus: corpus {str(path)!r} has 0 characters")


def test_corpus_shorter_than_one_chunk(gpt2_dir, tmp_path, capsys):
    path = tmp_path / "tiny.txt"
    path.write_text("fox fox", encoding="utf-8")
    code, _, err = run(capsys, *base_args(gpt2_dir, path, tmp_path))
    assert_one_line_error(code, err, f"--corpus {str(path)!r}: the token stream has",
                          "at least chunk + 1 = 9 are needed", "--chunk 8")


def test_corpus_shorter_than_chunk_plus_context_runs(gpt2_dir, tmp_path, capsys):
    """Decision: chunk + 1 tokens suffice; the first chunks read a shorter context (the
    protocol's start of stream), so a text of fewer than chunk + context tokens still runs."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gpt2_dir)
    text = "The quick brown fox jumps over the lazy dog."
    n = len(tokenizer(text)["input_ids"])
    assert 8 + 1 <= n < 8 + 16, n
    path = tmp_path / "short.txt"
    path.write_text(text, encoding="utf-8")
    code, out, err = run(capsys, *base_args(gpt2_dir, path, tmp_path))
    assert code == 0, err
    assert f"corpus {path}: {n} tokens" in out


def test_corpus_is_a_directory_or_missing(gpt2_dir, tmp_path, capsys):
    code, _, err = run(capsys, *base_args(gpt2_dir, tmp_path, tmp_path))
    assert_one_line_error(code, err, "--corpus: corpus path", "is a directory")
    code, _, err = run(capsys, *base_args(gpt2_dir, tmp_path / "nope.txt", tmp_path))
    assert_one_line_error(code, err, "corpus file not found", "nope.txt")


def test_tuning_text_too_short_when_it_is_needed(gpt2_dir, corpus, tmp_path, capsys):
    tiny = tmp_path / "tune.txt"
    tiny.write_text("fox", encoding="utf-8")
    code, _, err = run(capsys, *base_args(gpt2_dir, corpus, tmp_path, tune_corpus=tiny,
                                          methods="frozen,dyneval"))
    assert_one_line_error(code, err, f"--tune-corpus {str(tiny)!r}: the token stream has")
    # Unused (no dyneval to tune, no Fisher subspace): the tuning text is not read further.
    code, _, err = run(capsys, *base_args(gpt2_dir, corpus, tmp_path, tune_corpus=tiny))
    assert code == 0, err


@pytest.mark.parametrize("script", list(UNICODE))
def test_any_unicode_text_runs(gpt2_dir, tmp_path, capsys, script):
    path = tmp_path / f"{script}.txt"
    path.write_text(UNICODE[script], encoding="utf-8")
    code, out, err = run(capsys, *base_args(gpt2_dir, path, tmp_path, methods="frozen,ekf"))
    assert code == 0, err
    assert "tokens scored in" in out and (tmp_path / "out" / "ekf.nc").exists()


def test_unicode_and_undecodable_bytes_run_on_llama(llama_dir, tmp_path, capsys):
    path = tmp_path / "bytes.txt"
    path.write_bytes("".join(UNICODE.values()).encode("utf-8") + b"\xff\xfe\xc3(bad)\n" * 3)
    code, out, err = run(capsys, *base_args(llama_dir, path, tmp_path,
                                            methods="frozen,ekf,etkf@random:3"))
    assert code == 0, err
    assert "etkf@random:3" in out


# -------------------------------------------------------------------- models
def test_model_path_that_does_not_exist(corpus, tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "model"
    code, _, err = run(capsys, *base_args(missing, corpus, tmp_path))
    assert_one_line_error(code, err, f"--model path does not exist: {str(missing)!r}")


def test_model_path_without_a_model(corpus, tmp_path, capsys):
    empty = tmp_path / "empty_model"
    empty.mkdir()
    code, _, err = run(capsys, *base_args(empty, corpus, tmp_path))
    assert_one_line_error(code, err, "could not load a causal LM and its tokenizer from",
                          str(empty))
    code, _, err = run(capsys, *base_args(corpus, corpus, tmp_path))  # a text file
    assert_one_line_error(code, err, "could not load a causal LM and its tokenizer from")


def test_rotary_placement_on_gpt2(gpt2_dir, corpus, tmp_path, capsys):
    code, _, err = run(capsys, *base_args(gpt2_dir, corpus, tmp_path, placement="rotary"))
    assert_one_line_error(code, err, "--placement 'rotary': RotaryScale needs a model with "
                          "rotary position embeddings; GPT2LMHeadModel has none")


def test_rotary_placement_on_llama_runs_with_the_ukf(llama_dir, corpus, tmp_path, capsys):
    code, out, err = run(capsys, *base_args(llama_dir, corpus, tmp_path,
                                            placement="rotary:base", methods="frozen,ukf"))
    assert code == 0, err
    assert "(state n = 1)" in out


@pytest.mark.parametrize("placement,needle", [
    ("attention", "--placement 'attention': placement must be one of hidden, embedding"),
    ("rotary:spin", "--placement 'rotary:spin'"),
])
def test_unknown_placements(gpt2_dir, llama_dir, corpus, tmp_path, capsys, placement, needle):
    model = llama_dir if placement.startswith("rotary") else gpt2_dir
    code, _, err = run(capsys, *base_args(model, corpus, tmp_path, placement=placement))
    assert_one_line_error(code, err, needle)


# ------------------------------------------------------------------ settings
def test_members_below_two(gpt2_dir, corpus, tmp_path, capsys):
    code, _, err = run(capsys, *base_args(gpt2_dir, corpus, tmp_path, members=1))
    assert_one_line_error(code, err, "--members must be >= 2", "got 1")
    code, _, err = run(capsys, *base_args(gpt2_dir, corpus, tmp_path, members=0))
    assert code == 2 and "Traceback" not in err  # argparse: its usage, then the error line
    assert err.strip().splitlines()[-1] == (PREFIX + "argument --members: expected a positive "
                                            "integer, got '0'"), err


def test_chunk_longer_than_context(gpt2_dir, corpus, tmp_path, capsys):
    """Decision: an error (a chunk must be scored with at least `context` tokens available)."""
    code, _, err = run(capsys, *base_args(gpt2_dir, corpus, tmp_path, chunk=32, context=16))
    assert_one_line_error(code, err, "chunk (32) must not be longer than context (16)",
                          "raise --context or lower --chunk")


@pytest.mark.parametrize("methods,needle", [
    ("frozen,kalman", "--methods: unknown method 'kalman'; choose from frozen, dyneval"),
    ("frozen,letkf", "--methods: method 'letkf' is not available"),
    (",", "--methods: methods is empty"),
    ("etkf@pca:3", "--methods: subspace must be 'random:k' or 'fisher:k'"),
])
def test_unknown_methods(gpt2_dir, corpus, tmp_path, capsys, methods, needle):
    code, _, err = run(capsys, *base_args(gpt2_dir, corpus, tmp_path, methods=methods))
    assert_one_line_error(code, err, needle)


def test_ukf_on_a_state_too_large(gpt2_dir, corpus, tmp_path, capsys):
    code, _, err = run(capsys, *base_args(gpt2_dir, corpus, tmp_path, placement="svf:all",
                                          methods="frozen,ukf"))
    assert_one_line_error(code, err, "the UKF needs 2n + 1 = 513 sigma points (n = 256)",
                          "--subspace fisher:k")
    assert not (tmp_path / "out" / "frozen.nc").exists()  # refused before any run


@pytest.mark.parametrize("option,value,needle", [
    ("chunk", "abc", "argument --chunk: expected an integer, got 'abc'"),
    ("context", "-4", "argument --context: expected a positive integer, got '-4'"),
    ("threads", "0", "argument --threads: expected a positive integer, got '0'"),
    ("R", "x", "argument --R: expected a number, got 'x'"),
    ("R", "0", "R must be positive definite"),
    ("P0", "-1", "P0 (prior variance) must be a finite number > 0"),
])
def test_bad_numbers(gpt2_dir, corpus, tmp_path, capsys, option, value, needle):
    code, _, err = run(capsys, *base_args(gpt2_dir, corpus, tmp_path, **{option: value}))
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]  # argparse's errors follow its usage lines
    assert last.startswith(PREFIX) and needle in last, err


def test_an_unexpected_error_is_one_line_with_status_1(gpt2_dir, corpus, tmp_path, capsys,
                                                        monkeypatch):
    import importlib

    module = importlib.import_module("da_embed.compare")  # (da_embed.compare is the function)

    def broken(*args, **kwargs):
        raise RuntimeError("something inside torch\nwith a second line")

    monkeypatch.setattr(module, "compare", broken)
    code, _, err = run(capsys, *base_args(gpt2_dir, corpus, tmp_path))
    assert_one_line_error(code, err, "unexpected RuntimeError: something inside torch",
                          "--debug", status=1)
    with pytest.raises(RuntimeError):
        main(["compare", *map(str, base_args(gpt2_dir, corpus, tmp_path)), "--debug"])
