"""Benchmark layouts (r1mega.data.benchmarks): GSM8K, MATH, MATH-500, AIME and AMC rows, written here
as small local copies in jsonl, parquet and `datasets` save_to_disk directories, read back into
hand-checked reference answers; the detection rules; and each error, naming the file and row."""

from __future__ import annotations

import json
import logging

import pytest

from r1mega.config import ConfigError, load_config
from r1mega.config.sections import DataConfig
from r1mega.data.benchmarks import FORMATS, benchmark_name, detect_format
from r1mega.data.prompts import DataError, load_prompts, prompts_from_config
from tests.test_data_prompts import TOK

GSM8K = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
               "altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                 "How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
               "$<<0.2*50=10>>10.\n#### 10"},
    {"question": "A library has 1,000 books and buys 234 more. How many books does it have now?",
     "answer": "It has 1,000 + 234 = <<1000+234=1234>>1,234 books.\n#### 1,234"},
]
GSM8K_ANSWERS = ["72", "10", "1234"]

MATH = [
    {"problem": "A fair coin is flipped once. What is the probability that it lands heads?",
     "solution": "Of the $2$ equally likely outcomes, $1$ is heads, so the probability is $\\boxed{\\frac{1}{2}}$.",
     "level": "Level 1", "type": "Counting & Probability"},
    {"problem": "Compute $\\begin{pmatrix} 1 & 0 \\\\ 0 & 2 \\end{pmatrix} \\begin{pmatrix} 1 \\\\ 1 \\end{pmatrix}.$",
     "solution": "We have that\n\\[\\begin{pmatrix} 1 & 0 \\\\ 0 & 2 \\end{pmatrix} \\begin{pmatrix} 1 \\\\ 1 "
                 "\\end{pmatrix} = \\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}.\\]",
     "level": "Level 2", "type": "Precalculus"},
    {"problem": "If $x^2 = 2$ and $x > 0$, what is $x$?",
     "solution": "Squaring is one-to-one on the positives: from $\\boxed{x^2 = 2}$ we get $x = \\boxed{\\sqrt{2}}$.",
     "level": "Level 1", "type": "Algebra"},
    {"problem": "What is $3 \\cdot 4$?", "solution": "$3 \\cdot 4 = \\fbox{12}$.", "level": "Level 1",
     "type": "Prealgebra"},
]
MATH_ANSWERS = ["\\frac{1}{2}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\sqrt{2}", "12"]

MATH500 = [
    {"problem": "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your answer in "
                "the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$",
     "solution": "We have that $r = \\sqrt{0^2 + 3^2} = 3.$ ... the polar coordinates are "
                 "$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
     "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
     "unique_id": "test/precalculus/807.json"},
    {"problem": "What is $1^{(2^{235423523})}$?",
     "solution": "No matter what the exponent is, $1$ raised to it is $1$, so the answer is $\\boxed{1}$.",
     "answer": "1", "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1747.json"},
    {"problem": "How many positive divisors does 12 have?",
     "solution": "They are 1, 2, 3, 4, 6 and 12.",  # no box: the answer field is the reference
     "answer": "6", "subject": "Number Theory", "level": 1, "unique_id": "test/number_theory/1.json"},
]
MATH500_ANSWERS = ["\\left( 3, \\frac{\\pi}{2} \\right)", "1", "6"]

AIME = [
    {"id": 60, "problem": "Every morning Aya goes for a $9$-kilometer-long walk and stops at a coffee shop "
                          "afterwards. ... Find the number of minutes the walk takes her, including $t$.",
     "answer": 204, "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_1",
     "year": "2024"},
    {"id": 61, "problem": "Let $ABC$ be a triangle inscribed in circle $\\omega$. ... Find $m + n$.",
     "answer": 113, "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_10",
     "year": "2024"},
    {"id": 62, "problem": "Find the number of ordered pairs ... $\\frac{m}{n}$ ... Find $m+n$.", "answer": 33,
     "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_4", "year": "2024"},
]
AIME_ANSWERS = ["204", "113", "33"]

AMC = [  # answers stored as floats in some hub copies
    {"id": 0, "problem": "What is the value of $9901 \\cdot 101 - 99 \\cdot 10101$?", "answer": 2.0, "url": "x"},
    {"id": 1, "problem": "How many of the numbers $1, 2, \\ldots, 142$ are odd?", "answer": 71.0, "url": "y"},
]
AMC_ANSWERS = ["2", "71"]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _parquet(path, rows):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def _saved(path, rows, split=None):
    """A `datasets` save_to_disk directory: a Dataset, or a DatasetDict holding ``split``."""
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(rows)
    (datasets.DatasetDict({split: ds}) if split else ds).save_to_disk(str(path))
    return str(path)


def _copies(tmp_path, stem, rows):
    """(source, split) of the same rows as jsonl, parquet, a saved Dataset and a saved DatasetDict."""
    return [(_jsonl(tmp_path / f"{stem}.jsonl", rows), "train"),
            (_parquet(tmp_path / f"{stem}.parquet", rows), "train"),
            (_saved(tmp_path / "ds" / stem, rows), "train"),
            (_saved(tmp_path / "dd" / stem, rows, split="test"), "test")]


@pytest.mark.parametrize("stem,rows,layout,answers", [
    ("gsm8k", GSM8K, "gsm8k", GSM8K_ANSWERS),
    ("math", MATH, "math", MATH_ANSWERS),
    ("math500", MATH500, "math", MATH500_ANSWERS),
    ("aime24", AIME, "aime", AIME_ANSWERS),
    ("amc23", AMC, "amc", AMC_ANSWERS),
])
def test_every_layout_from_every_source(tmp_path, caplog, stem, rows, layout, answers):
    """Each layout, named or detected (``auto``), reads the same answers from jsonl, parquet and both
    kinds of save_to_disk directory."""
    question = "question" if layout == "gsm8k" else "problem"
    for src, split in _copies(tmp_path, stem, rows):
        for fmt in (layout, "auto"):
            with caplog.at_level(logging.INFO, logger="r1mega.data"):
                recs = load_prompts(src, TOK, split=split, template="plain", max_prompt_len=400, format=fmt)
            assert [r.answer for r in recs] == answers, (src, fmt)
            assert [r.prompt_text for r in recs] == [row[question] for row in rows]
            assert [r.index for r in recs] == list(range(len(rows)))
            assert all(r.kind == "reasoning" and r.metadata["benchmark"] == stem for r in recs)
    detected = "aime" if layout == "amc" else layout  # amc's rows are aime's layout
    assert f"data.format auto -> {detected}" in caplog.text


def test_metadata_keeps_the_rest_of_the_row(tmp_path):
    src = _jsonl(tmp_path / "m.jsonl", MATH)
    math = load_prompts(src, TOK, template="plain", format="auto")
    assert math[0].metadata == {"level": "Level 1", "type": "Counting & Probability", "source": src, "row": 0,
                                "benchmark": "m"}
    # MATH-500: the answer field is the reference; the solution stays
    m500 = _jsonl(tmp_path / "m500.jsonl", MATH500)
    auto = load_prompts(m500, TOK, template="plain", max_prompt_len=400, format="auto", name="MATH-500")
    assert auto == load_prompts(m500, TOK, template="plain", max_prompt_len=400, format="math", name="MATH-500")
    meta = auto[1].metadata
    assert set(meta) == {"solution", "subject", "level", "unique_id", "source", "row", "benchmark"}
    assert meta["benchmark"] == "MATH-500" and meta["level"] == 1
    gsm = load_prompts(_jsonl(tmp_path / "g.jsonl", GSM8K), TOK, template="plain", format="gsm8k")
    assert set(gsm[0].metadata) == {"source", "row", "benchmark"}
    # the generic layout adds no benchmark unless named (its metadata is what it always was)
    plain = load_prompts(_jsonl(tmp_path / "p.jsonl", [{"question": "1+1?", "answer": "2", "task": "add"}]), TOK,
                         template="plain", format="auto")
    assert plain[0].metadata == {"task": "add", "source": str(tmp_path / "p.jsonl"), "row": 0}
    named = load_prompts(str(tmp_path / "p.jsonl"), TOK, template="plain", format="generic", name="adds")
    assert named[0].metadata["benchmark"] == "adds"


def test_capitalised_hub_columns(tmp_path):
    """Some hub copies spell the columns Problem / Solution / Answer."""
    rows = [{"ID": "2024-I-1", "Problem": AIME[0]["problem"], "Solution": "... so the answer is $\\boxed{204}$.",
             "Answer": 204}, {"ID": "2024-I-2", "Problem": "Find $x$.", "Solution": "No box here.", "Answer": 25}]
    src = _jsonl(tmp_path / "aime_2024.jsonl", rows)
    assert detect_format(rows[0]) == ("math", "'problem' and 'solution'")
    for fmt in ("auto", "math", "aime"):
        recs = load_prompts(src, TOK, template="plain", max_prompt_len=400, format=fmt)
        assert [r.answer for r in recs] == ["204", "25"] and recs[1].prompt_text == "Find $x$."
        assert set(recs[0].metadata) == {"ID", "Solution", "source", "row", "benchmark"}


def test_detection_rules_in_order():
    assert detect_format(GSM8K[0])[0] == "gsm8k"
    assert detect_format(MATH[0])[0] == "math"
    assert detect_format(MATH500[0])[0] == "math"
    assert detect_format(AIME[0])[0] == "aime"
    assert detect_format({"question": "1+1?", "answer": "2"})[0] == "generic"           # no ####
    assert detect_format({"question": "1+1?", "answer": 2})[0] == "generic"
    assert detect_format({"prompt": "1+1?", "target": "2"})[0] == "generic"
    # fields named in the config win over any layout (rule 1): the mapping of before
    assert detect_format(MATH[0], "problem", "solution") == (
        "generic", "data.question_key/answer_key are set ('problem'/'solution')")
    assert detect_format(GSM8K[0], "question", "final")[0] == "generic"


def test_prompts_from_config_uses_data_format(tmp_path, caplog):
    src = _jsonl(tmp_path / "math500.jsonl", MATH500)
    cfg = DataConfig(train=src, eval=src, template="plain", max_prompt_len=400, prompts_per_step=2)
    assert cfg.format == "auto"
    with caplog.at_level(logging.INFO, logger="r1mega.data"):
        assert [r.answer for r in prompts_from_config(cfg, TOK)] == MATH500_ANSWERS
    assert f"{src}: data.format auto -> math (first row: 'problem' and 'solution')" in caplog.text
    cfg = DataConfig(train=src, template="plain", max_prompt_len=400, prompts_per_step=2, format="generic")
    with pytest.raises(DataError, match=r"line 1 has no 'question' field \(data.question_key\)"):
        prompts_from_config(cfg, TOK)


def test_format_choices_match_the_config():
    assert DataConfig.__dataclass_fields__["format"].metadata["choices"] == FORMATS
    assert load_config(None, ["data.format=math"]).data.format == "math"
    with pytest.raises(ConfigError, match="data.format"):
        load_config(None, ["data.format=mmlu"])


def test_benchmark_names():
    assert benchmark_name("data/math500.jsonl") == "math500"
    assert benchmark_name("/d/aime_2024.parquet") == "aime_2024"
    assert benchmark_name("saved/gsm8k_test/") == "gsm8k_test"
    assert benchmark_name("HuggingFaceH4/MATH-500") == "MATH-500"


# --------------------------------------------------------------------------- errors name file and row

def test_gsm8k_row_without_hashes(tmp_path):
    src = _jsonl(tmp_path / "g.jsonl", [GSM8K[0], {"question": "What is 2+3?", "answer": "2+3 is 5."}])
    for fmt in ("gsm8k", "auto"):  # auto: the first row makes the file GSM8K
        with pytest.raises(DataError, match=r"g\.jsonl: line 2: 'answer' has no '####' before the final answer "
                                            r"\(data.format gsm8k\): '2\+3 is 5\.'"):
            load_prompts(src, TOK, template="plain", max_prompt_len=400, format=fmt)
    src = _jsonl(tmp_path / "e.jsonl", [{"question": "q", "answer": "work #### "}])
    with pytest.raises(DataError, match=r"line 1: 'answer' \(data.format gsm8k\) is empty"):
        load_prompts(src, TOK, template="plain", format="gsm8k")


def test_math_row_without_answer_or_box(tmp_path):
    no_box = {"problem": "What is 2+3?", "solution": "Adding, we get 5.", "level": "Level 1"}
    src = _jsonl(tmp_path / "m.jsonl", [MATH[0], no_box])
    with pytest.raises(DataError, match=r"m\.jsonl: line 2: no reference answer \(data.format math\): no 'answer'"
                                        r", and 'solution' has no \\boxed\{\} or \\fbox\{\} in it"):
        load_prompts(src, TOK, template="plain", max_prompt_len=400, format="auto")
    src = _jsonl(tmp_path / "e.jsonl", [{"problem": "p", "solution": "so $\\boxed{}$."}])
    with pytest.raises(DataError, match=r"line 1: no reference answer .* its last box is empty or never closed"):
        load_prompts(src, TOK, template="plain", format="math")
    src = _jsonl(tmp_path / "n.jsonl", [{"problem": "p", "answer": None}])  # null answer, no solution
    with pytest.raises(DataError, match=r"line 1: no reference answer \(data.format math\): 'answer' is null and "
                                        r"there is no 'solution' field; its keys: answer, problem"):
        load_prompts(src, TOK, template="plain", format="math")
    src = _jsonl(tmp_path / "p.jsonl", [{"problem": "p", "level": 1}])
    with pytest.raises(DataError, match=r"line 1 has no 'answer' or 'solution' field \(data.format math\); "
                                        r"its keys: level, problem"):
        load_prompts(src, TOK, template="plain", format="math")


def test_missing_fields_and_general_rows(tmp_path):
    src = _jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "answer": 3}])
    with pytest.raises(DataError, match=r"a\.jsonl: line 1 has no 'problem' or 'question' field "
                                        r"\(data.format aime\); its keys: answer, prompt"):
        load_prompts(src, TOK, template="plain", format="aime")
    src = _jsonl(tmp_path / "q.jsonl", [{"problem": "", "answer": 3}])
    with pytest.raises(DataError, match=r"line 1: 'problem' \(data.format amc\) is empty"):
        load_prompts(src, TOK, template="plain", format="amc")
    src = _jsonl(tmp_path / "k.jsonl", [AIME[0], {"problem": "Say hi.", "answer": None, "kind": "general"}])
    with pytest.raises(DataError, match=r"line 2: a row of kind 'general' .* needs data.format generic, not aime"):
        load_prompts(src, TOK, template="plain", max_prompt_len=400, format="auto")


def test_unknown_format(tmp_path):
    src = _jsonl(tmp_path / "g.jsonl", GSM8K)
    with pytest.raises(DataError, match=r"data.format \('mmlu'\) must be one of: auto, generic, gsm8k, math, aime, "
                                        r"amc"):
        load_prompts(src, TOK, template="plain", format="mmlu")


def test_directories_that_are_not_saved_datasets(tmp_path):
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(DataError, match=r"plain_dir is a directory but not one written by `datasets`' save_to_disk"):
        load_prompts(str(tmp_path / "plain_dir"), TOK, template="plain")
    src = _saved(tmp_path / "dd", MATH500, split="test")
    with pytest.raises(DataError, match=r"dd: the saved DatasetDict has no split 'train' \(data.split\); its "
                                        r"splits: test"):
        load_prompts(src, TOK, template="plain", max_prompt_len=400, format="math")
    bad = _saved(tmp_path / "bad", [MATH[0], {**MATH[1], "solution": "no box"}], split="test")
    with pytest.raises(DataError, match=r"bad \(test\): row 2: no reference answer"):
        load_prompts(bad, TOK, split="test", template="plain", max_prompt_len=400, format="auto")


# ------------------------------------------------------------------------------------ code rows
APPS_ROWS = [{"question": "Read a and b; print a + b.", "input_output": json.dumps(
                 {"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}), "difficulty": "introductory"},
             {"question": "Print the square of n.", "input_output": json.dumps({"inputs": ["4\n"], "outputs": ["16\n"]}),
              "difficulty": "introductory"}]
LCB_ROWS = [{"question_content": "Sum the n numbers.", "public_test_cases": json.dumps(
    [{"input": "2\n3 4\n", "output": "7\n", "testtype": "stdin"}]), "language": "cpp"}]
CC_ROWS = [{"description": "Print n twice.", "public_tests": {"input": ["3\n"], "output": ["3 3\n"]},
            "private_tests": {"input": ["0\n"], "output": ["0 0\n"]}}]


@pytest.mark.parametrize("stem,rows,question,fence", [("apps", APPS_ROWS, "question", "python"),
                                                      ("lcb", LCB_ROWS, "question_content", "cpp"),
                                                      ("codecontests", CC_ROWS, "description", "python")])
def test_code_rows_keep_their_tests_and_ask_for_a_program(tmp_path, stem, rows, question, fence):
    from r1mega.rewards.code_tests import load_code_tests
    from r1mega.rewards.correctness import correctness_reward

    for src, split in _copies(tmp_path, stem, rows)[:2]:  # jsonl and parquet
        recs = load_prompts(src, TOK, split=split, template="r1_zero_compact", max_prompt_len=400, format="auto")
        assert [r.answer for r in recs] == [None] * len(rows)
        for rec, row in zip(recs, rows):
            assert row[question] in rec.prompt_text and f"```{fence}" in rec.prompt_text
            assert "boxed" not in rec.prompt_text
            assert correctness_reward(rec.metadata) == "code" and load_code_tests(rec.metadata)
    assert detect_format(APPS_ROWS[0])[0] == "code"


def test_a_code_row_without_tests(tmp_path):
    src = _jsonl(tmp_path / "code.jsonl", [{"question": "Print 1."}])
    with pytest.raises(DataError, match=r"line 1 has no tests \(data.format code\)"):
        load_prompts(src, TOK, template="plain", format="code")
