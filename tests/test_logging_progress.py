"""StepProgress and console_summary: compact postfix, rank gating, log-friendly non-TTY output."""

import io

import torch

from r1mega.logging.progress import StepProgress, compact_postfix, console_summary, fmt_value, format_summary

METRICS = {"reward/mean": 0.5312, "acc/mean": 0.41, "response/len_mean": 812.4, "actor/kl": 0.00123,
           "perf/tokens_per_s": 5123.0, "time/rollout": 6.0, "time/train": 3.0, "time/other": 1.0,
           "time/step": 10.0}


def test_formatting():
    assert [fmt_value(v) for v in (0.5312, 812.4, 0.00123, 5123.0, 0, 3, float("nan"))] == \
        ["0.531", "812", "1.2e-03", "5123", "0", "3", "nan"]
    assert fmt_value(51234.0) == "51.2k" and fmt_value(torch.tensor(0.25)) == "0.25"
    assert compact_postfix(METRICS) == "reward=0.531 acc=0.41 len=812 kl=1.2e-03 tok/s=5123"
    assert compact_postfix({"actor/kl": 0.5}) == "kl=0.5"
    line = format_summary(12, METRICS, total_steps=100)
    assert line == ("step 12/100 | reward 0.531 | acc 0.41 | len 812 | kl 1.2e-03 | tok/s 5123 | "
                    "10.0s (rollout 60%, train 30%, other 10%)")


def test_console_summary_rank_gated():
    buf = io.StringIO()
    assert console_summary(3, {"reward/mean": 1.0}, file=buf) == "step 3 | reward 1"
    assert console_summary(3, {"reward/mean": 1.0}, rank=1, file=buf) is None
    assert buf.getvalue() == "step 3 | reward 1\n"


def test_progress_non_tty_writes_whole_lines():
    buf = io.StringIO()  # not a TTY
    with StepProgress(10, initial=2, file=buf, log_interval=0) as bar:
        for step in range(3, 11):
            bar.update(step, {"reward/mean": step / 10, "actor/kl": 0.01})
    out = buf.getvalue()
    assert "\r" not in out and out.endswith("\n")
    last = out.strip().splitlines()[-1]
    assert "10/10" in last and "reward=1" in last and "kl=0.01" in last


def test_progress_disabled_off_rank_zero():
    buf = io.StringIO()
    for bar in (StepProgress(5, rank=1, file=buf), StepProgress(5, enabled=False, file=buf)):
        bar.update(1, {"reward/mean": 1.0})
        bar.close()
    assert buf.getvalue() == ""
