"""MetricsLogger and read_metrics: jsonl round trip, resume truncation, rank gating, sinks."""

import json
import math
import sys
import types

import numpy as np
import pytest
import torch

from r1mega.logging.metrics import METRICS_FILE, TENSORBOARD_DIR, MetricsLogger, read_metrics

def test_jsonl_round_trip_with_nonfinite_and_tensors(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(1, {"reward/mean": 0.5, "response/len_max": 812, "actor/kl": torch.tensor(0.25),
                    "actor/grad_norm": float("nan"), "actor/loss": float("inf"), "x/neg": -math.inf,
                    "flag": True, "np": np.float32(2.0)})
        log.log(2, {"reward/mean": torch.tensor([0.75], dtype=torch.float64)})
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert len(lines) == 2
    raw = json.loads(lines[0])  # strict JSON: non-finite values as strings
    assert raw["actor/grad_norm"] == "nan" and raw["actor/loss"] == "inf" and raw["x/neg"] == "-inf"
    recs = read_metrics(tmp_path)
    assert [r["step"] for r in recs] == [1, 2]
    r = recs[0]
    assert r["reward/mean"] == 0.5 and r["response/len_max"] == 812 and isinstance(r["response/len_max"], int)
    assert r["actor/kl"] == 0.25 and r["flag"] == 1
    assert math.isnan(r["actor/grad_norm"]) and r["actor/loss"] == math.inf and r["x/neg"] == -math.inf
    assert r["np"] == 2.0
    assert recs[1]["reward/mean"] == 0.75
    assert recs[0]["ts"] > 0

def test_each_line_is_flushed(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    log.log(1, {"a": 1.0})
    assert read_metrics(tmp_path)[0]["a"] == 1.0  # visible before close
    log.close()
    log.close()  # idempotent

def test_bad_values_are_errors_naming_the_key(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        with pytest.raises(ValueError, match="'v'.*shape"):
            log.log(1, {"v": torch.zeros(3)})
        with pytest.raises(ValueError, match="'n'.*shape"):
            log.log(1, {"n": np.ones(2)})
        with pytest.raises(TypeError, match="'s'"):
            log.log(1, {"s": "hello"})
        with pytest.raises(ValueError, match="reserved"):
            log.log(1, {"step": 3})

def test_resume_truncates_steps_after_checkpoint(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        for s in range(1, 8):
            log.log(s, {"reward/mean": s / 10})
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"step": 8, "reward/me')  # crash mid-line
    with MetricsLogger(tmp_path, tensorboard=False, resume_step=5) as log:
        assert log.dropped_on_resume == 3  # steps 6, 7 and the partial line
        for s in range(6, 9):
            log.log(s, {"reward/mean": s / 10})
    steps = [r["step"] for r in read_metrics(tmp_path)]
    assert steps == list(range(1, 9))

def test_fresh_run_moves_old_file_aside(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(1, {"a": 1})
    with pytest.warns(RuntimeWarning, match="fresh run"):
        log = MetricsLogger(tmp_path, tensorboard=False)
    log.log(1, {"a": 2})
    log.close()
    assert [r["a"] for r in read_metrics(tmp_path)] == [2]
    assert (tmp_path / (METRICS_FILE + ".prev")).is_file()

def test_truncated_last_line_is_skipped_but_middle_garbage_is_an_error(tmp_path):
    p = tmp_path / METRICS_FILE
    p.write_text('{"step": 1, "a": 1}\n{"step": 2, "a"')
    with pytest.warns(RuntimeWarning, match="truncated"):
        assert [r["step"] for r in read_metrics(p)] == [1]
    p.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=":2: not a JSON line"):
        read_metrics(p)
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        read_metrics(tmp_path / "nope")

def test_only_rank_zero_writes(tmp_path):
    d = tmp_path / "run"
    with MetricsLogger(d, tensorboard=True, rank=1, wandb_project="never-opened") as log:
        log.log(1, {"a": 1.0})
    assert not d.exists()

def test_tensorboard_event_file(tmp_path):
    pytest.importorskip("tensorboard")
    with MetricsLogger(tmp_path, tensorboard=True, config_dict={"lr": 1e-6}) as log:
        for s in range(1, 4):
            log.log(s, {"reward/mean": 0.1 * s, "actor/kl": float("nan")})
    events = list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    acc = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    acc.Reload()
    assert "reward/mean" in acc.Tags()["scalars"]
    vals = [(e.step, round(e.value, 5)) for e in acc.Scalars("reward/mean")]
    assert vals == [(1, 0.1), (2, 0.2), (3, 0.3)]

def test_tensorboard_missing_warns_and_keeps_jsonl(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    with pytest.warns(RuntimeWarning, match="TensorBoard is not importable"):
        log = MetricsLogger(tmp_path, tensorboard=True)
    log.log(1, {"a": 1.0})
    log.close()
    assert read_metrics(tmp_path)[0]["a"] == 1.0
    assert not (tmp_path / TENSORBOARD_DIR).exists()

def test_wandb_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match="wandb_project='proj'.*not installed"):
        MetricsLogger(tmp_path, tensorboard=False, wandb_project="proj")

def test_wandb_offline_by_default_and_resumes_same_id(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, metrics, step):
            calls.append(("log", step, dict(metrics)))

        def finish(self):
            calls.append(("finish",))

    ids = iter(["id1", "id2"])
    fake = types.SimpleNamespace(util=types.SimpleNamespace(generate_id=lambda: next(ids)),
                                 init=lambda **kw: calls.append(("init", kw)) or Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with MetricsLogger(tmp_path, tensorboard=False, wandb_project="proj", config_dict={"a": 1}) as log:
        log.log(3, {"reward/mean": torch.tensor(0.5)})
    init = calls[0][1]
    assert init["mode"] == "offline" and init["project"] == "proj" and init["id"] == "id1"
    assert init["config"] == {"a": 1}
    assert calls[1] == ("log", 3, {"reward/mean": 0.5}) and calls[2] == ("finish",)
    monkeypatch.setenv("WANDB_MODE", "online")
    MetricsLogger(tmp_path, tensorboard=False, wandb_project="proj", resume_step=3).close()
    assert calls[3][1]["id"] == "id1" and calls[3][1]["mode"] == "online"

def test_tensorboard_resume_purges_steps_after_checkpoint(tmp_path):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    with MetricsLogger(tmp_path) as log:
        for s in range(1, 5):
            log.log(s, {"reward/mean": float(s)})
    with MetricsLogger(tmp_path, resume_step=2) as log:
        for s in (3, 4):
            log.log(s, {"reward/mean": 10.0 * s})
    acc = ea.EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("reward/mean")] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
