"""``da-embed claims`` writes as it goes: an interrupted run keeps what it finished.

Checks: with ``out=``, ``generations.jsonl`` holds every finished generation
before the next one starts (its line count is read from inside ``generate``);
after Ctrl-C the kept lines are valid JSON and equal, text for text, the
first generations of an uninterrupted run with the same seed; the table of
an interrupted run equals (in its deterministic columns) the table of a full
run on the completed prompts only; the CLI exits 130 with one line and writes
that table; an uninterrupted run's files hold each prompt x method exactly
once and equal what :func:`write_claims` writes from memory (the files of
the code before incremental writing).
"""

import json
import os

import numpy as np
import pytest

import da_embed.claims.reproduce as claims  # the module that calls generate
from da_embed.claims import ClaimsTable, reproduce_claims, write_claims
from da_embed.cli import main
from da_embed.reference import train_tokenizer
from da_embed.testing import tiny_gpt2, tiny_llama

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXT = "the cat sat on the mat. the dog ate a bone. a bird flew over the house. " * 20
PROMPTS = ["the cat", "a bird flew", "the dog ate"]
METHODS = ["base", "enkf"]
RUN = dict(methods=METHODS, members=2, every=4, max_new_tokens=8, encoder=None,
           progress=False)
FIELDS = {"method", "prompt_index", "prompt", "text", "seconds", "verifier_failures"}
# Columns that do not depend on timing or memory (those differ between runs).
DETERMINISTIC = ("method", "coherence", "coherence_change_pct", "coherence_change_low",
                 "coherence_change_high", "diversity", "diversity_kept_pct",
                 "diversity_kept_low", "diversity_kept_high", "parameters",
                 "verifier_failures")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXT, vocab_size=300)


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(vocab_size=len(tok), initializer_range=0.4)


@pytest.fixture(scope="module")
def full_run(model, tok, tmp_path_factory):
    """An uninterrupted run with ``out=`` (and its folder)."""
    out = tmp_path_factory.mktemp("full")
    return reproduce_claims(model, tok, PROMPTS, out=out, **RUN), out


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def interrupt_at(monkeypatch, n, log):
    """Make the ``n``-th timed call of ``generate`` raise Ctrl-C (after the untimed warm-up
    call of each method); before each, record the number of lines ``log`` holds (None while
    it does not exist)."""
    calls, warm, seen = [0], [0], []
    real = claims.generate

    def generate(*args, **kwargs):
        if warm[0] < len(METHODS):  # the warm-ups come first and write nothing
            warm[0] += 1
            return real(*args, **kwargs)
        calls[0] += 1
        seen.append(len(read_lines(log)) if os.path.exists(log) else None)
        if calls[0] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(claims, "generate", generate)
    return seen


def rows_close(a, b):
    assert [r["method"] for r in a] == [r["method"] for r in b]
    for ra, rb in zip(a, b):
        for k in DETERMINISTIC[1:]:
            assert ra[k] == pytest.approx(rb[k], rel=1e-12, nan_ok=True), (ra["method"], k)


def test_generations_are_written_as_they_finish(model, tok, full_run, tmp_path, monkeypatch):
    full, _ = full_run
    log = tmp_path / "generations.jsonl"
    seen = interrupt_at(monkeypatch, 4, log)  # calls: p0 base, p0 enkf, p1 base, p1 enkf
    with pytest.raises(KeyboardInterrupt) as info:
        reproduce_claims(model, tok, PROMPTS, out=tmp_path, **RUN)
    assert seen == [0, 1, 2, 3]  # each generation on disk before the next one starts
    lines = read_lines(log)
    assert len(lines) == 3
    kept = [json.loads(line) for line in lines]  # every line is valid JSON
    assert all(set(g) == FIELDS for g in kept)
    assert [(g["prompt_index"], g["method"]) for g in kept] == [(0, "base"), (0, "enkf"),
                                                               (1, "base")]
    # Same seed per prompt: the kept texts are those of the uninterrupted run.
    assert [g["text"] for g in kept] == [g["text"] for g in full.generations[:3]]
    stop = info.value
    assert (stop.completed, stop.total, stop.generations) == (1, 3, 3)
    partial = stop.table()
    assert partial.settings["prompts"] == 1
    assert partial.settings["interrupted"] == "after 1 of 3 prompts"
    assert partial.generations == kept  # the file and the table agree
    # Its rows are those of a full run on the completed prompt alone.
    alone = reproduce_claims(model, tok, PROMPTS[:1], **RUN)
    rows_close(partial.rows, alone.rows)
    assert "interrupted after 1 of 3 prompts" in partial.table()


def test_interrupt_before_any_prompt_completes_has_no_table(model, tok, tmp_path,
                                                            monkeypatch):
    interrupt_at(monkeypatch, 2, tmp_path / "generations.jsonl")
    with pytest.raises(KeyboardInterrupt) as info:
        reproduce_claims(model, tok, PROMPTS, out=tmp_path, **RUN)
    assert info.value.completed == 0 and info.value.table() is None
    assert len(read_lines(tmp_path / "generations.jsonl")) == 1


def test_uninterrupted_files_are_unchanged(full_run, tmp_path):
    table, out = full_run
    lines = read_lines(out / "generations.jsonl")
    pairs = [(json.loads(line)["prompt_index"], json.loads(line)["method"]) for line in lines]
    # One line per prompt x method, in run order, none twice.
    assert pairs == [(i, m) for i in range(len(PROMPTS)) for m in METHODS]
    assert len(table.generations) == len(PROMPTS) * len(METHODS)
    # The file written as the run went equals, byte for byte, the one written from
    # memory at the end (what the command wrote before incremental writing).
    write_claims(table, tmp_path)
    assert (out / "generations.jsonl").read_bytes() == (
        tmp_path / "generations.jsonl").read_bytes()
    assert "interrupted" not in table.settings and "\ninterrupted" not in table.table()
    assert table.settings["prompts"] == len(PROMPTS)


def test_write_claims_can_leave_the_generations_file(tmp_path):
    row = {k: 0.0 for k in DETERMINISTIC[1:] + ("tokens_per_second", "slowdown",
                                                "extra_memory_mb")}
    row.update(method="base", parameters=0, verifier_failures=0)
    settings = dict(prompts=1, prompt_source="given", max_new_tokens=8, candidates=1, every=8,
                    members=8, ukf_subspace=None, verifier="self", top_p=1.0,
                    temperature=1.0, seed=0, model="tiny")
    (tmp_path / "generations.jsonl").write_text("kept\n")
    write_claims(ClaimsTable([row], settings, "c", [{"text": "x"}]), tmp_path,
                 generations=False)
    assert (tmp_path / "generations.jsonl").read_text() == "kept\n"
    assert {"claims.json", "claims.csv", "claims.txt"} <= set(os.listdir(tmp_path))


# ------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def saved_model(tok, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tiny_gpt2(vocab_size=len(tok), initializer_range=0.4).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text(" = T = \n the cat sat . x .\n a bird flew .\n the dog ate .\n")
    return path


def cli(saved_model, corpus, out, capsys):
    code = main([str(a) for a in ["claims", "--model", saved_model, "--corpus", corpus,
                                  "--prompts", 3, "--max-new-tokens", 8, "--every", 4,
                                  "--members", 2, "--methods", ",".join(METHODS),
                                  "--out", out, "--no-progress"]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_interrupt_exits_130_and_writes_the_completed_table(saved_model, corpus, tmp_path,
                                                                monkeypatch, capsys):
    out = tmp_path / "claims"
    seen = interrupt_at(monkeypatch, 6, out / "generations.jsonl")  # in prompt 2, enkf
    code, stdout, stderr = cli(saved_model, corpus, out, capsys)
    assert code == 130
    message = stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in stderr
    assert message[0] == (f"interrupted: 2 of 3 prompts completed by every method; all 5 "
                          f"finished generations are kept in {out}/generations.jsonl; the "
                          f"claims table of those 2 prompts is in {out}/claims.txt "
                          "(.json, .csv)")
    assert seen == [0, 1, 2, 3, 4, 5]  # emptied at the start, then one line per call
    lines = [json.loads(line) for line in read_lines(out / "generations.jsonl")]
    assert [(g["prompt_index"], g["method"]) for g in lines] == [
        (0, "base"), (0, "enkf"), (1, "base"), (1, "enkf"), (2, "base")]
    with open(out / "claims.json") as f:
        summary = json.load(f)
    assert summary["settings"]["prompts"] == 2
    assert summary["settings"]["interrupted"] == "after 2 of 3 prompts"
    assert [r["method"] for r in summary["rows"]] == METHODS
    text = (out / "claims.txt").read_text()
    assert "prompts: 2 (" in text and "interrupted after 2 of 3 prompts" in text
    assert text.strip() in stdout  # the table is printed too
    assert len(read_lines(out / "claims.csv")) == 1 + len(METHODS)


def test_cli_interrupt_in_the_first_prompt_writes_no_table(saved_model, corpus, tmp_path,
                                                          monkeypatch, capsys):
    out = tmp_path / "claims"
    interrupt_at(monkeypatch, 2, out / "generations.jsonl")
    code, stdout, stderr = cli(saved_model, corpus, out, capsys)
    assert code == 130 and stdout == ""
    message = stderr.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("interrupted: 0 of 3 prompts")
    assert message[0].endswith("no claims table written")
    assert sorted(os.listdir(out)) == ["generations.jsonl"]
    assert len(read_lines(out / "generations.jsonl")) == 1


def test_cli_uninterrupted_files(saved_model, corpus, tmp_path, capsys):
    out = tmp_path / "claims"
    code, stdout, stderr = cli(saved_model, corpus, out, capsys)
    assert code == 0, stderr
    lines = [json.loads(line) for line in read_lines(out / "generations.jsonl")]
    assert [(g["prompt_index"], g["method"]) for g in lines] == [
        (i, m) for i in range(3) for m in METHODS]  # each exactly once
    assert all(set(g) == FIELDS for g in lines)
    with open(out / "claims.json") as f:
        summary = json.load(f)
    assert set(summary) == {"rows", "settings", "seed_claims", "coherence_label"}
    assert "interrupted" not in summary["settings"] and summary["settings"]["prompts"] == 3
    assert "\ninterrupted after" not in stdout  # (the tmp path holds "uninterrupted")
    assert np.isfinite(summary["rows"][1]["slowdown"])


def test_each_method_is_warmed_up_once_untimed_before_the_timed_generations(
        model, tok, tmp_path, monkeypatch):
    calls = []
    real = claims.generate

    def generate(model, tokenizer, prompt, **kwargs):
        calls.append((prompt, kwargs["max_new_tokens"], kwargs.get("filter")))
        return real(model, tokenizer, prompt, **kwargs)

    monkeypatch.setattr(claims, "generate", generate)
    table = reproduce_claims(model, tok, PROMPTS[:2], out=tmp_path, **RUN)
    warm, timed = calls[:len(METHODS)], calls[len(METHODS):]
    assert [c[:2] for c in warm] == [(PROMPTS[0], RUN["every"])] * len(METHODS)
    assert len(timed) == 2 * len(METHODS) and {c[1] for c in timed} == {RUN["max_new_tokens"]}
    assert [c[2] for c in warm] == [c[2] for c in timed[:len(METHODS)]]  # each method's own
    assert len(read_lines(tmp_path / "generations.jsonl")) == len(timed)  # warm-ups not kept
    assert "warm_up" in table.settings

