"""The claims table (runner/baselines/claims.py): its statistics against scipy's own, its verdicts on
hand-made curves, and `runner baselines claims` measuring through `runner run`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from runner.baselines import claims
from runner.baselines.claims import Claim, Run

RUNNER = str(Path(sys.executable).with_name("runner"))


def doc(key: str, per_seed: list[list[float]], samples: list[int]) -> dict:
    return {"curves": {f"seed_{i}": {key: values, "samples": samples} for i, values in enumerate(per_seed)}}


def test_welchs_interval_is_scipys():
    a, b = [97.1, 96.4, 98.0, 97.5, 96.9], [95.0, 96.2, 94.8, 95.9]
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert claims.welch_interval(a, b) == pytest.approx((expected.low, expected.high), rel=1e-9)
    with pytest.raises(ValueError, match="two seeds"):
        claims.welch_interval([1.0], b)


def test_a_lower_is_better_claim_holds_only_when_the_whole_interval_is_on_the_claimed_side():
    claim = Claim("p", "s", "opt-text-transformer", Run("a", "a.py"), Run("b", "b.py"), "best")
    better = doc("val_bpb", [[3.0, 1.80], [3.0, 1.78], [3.0, 1.79]], [1, 2])
    worse = doc("val_bpb", [[3.0, 2.06], [3.0, 2.05], [3.0, 2.08]], [1, 2])
    v = claims.judge(claim, better, worse)
    assert v.outcome == "holds" and v.difference == pytest.approx(1.79 - 2.0633333, abs=1e-6)
    assert v.interval[1] < 0 and v.seeds == 3
    assert claims.judge(claim, worse, better).outcome == "contradicted"
    noisy = doc("val_bpb", [[3.0, 1.5], [3.0, 2.5], [3.0, 2.1]], [1, 2])
    assert claims.judge(claim, noisy, worse).outcome == "not resolved at this scale"


def test_a_margin_claim_holds_when_the_method_is_at_most_that_much_worse():
    claim = Claim("p", "s", "opt-digits", Run("a", "a.py"), Run("b", "b.py"), "final", margin=1.0)
    full = doc("test_top1", [[90, 97.0], [90, 97.2], [90, 96.8]], [1, 2])
    pruned = doc("test_top1", [[90, 96.6], [90, 96.8], [90, 96.7]], [1, 2])  # 0.3 worse, tight
    assert claims.judge(claim, pruned, full).outcome == "holds"
    much_worse = doc("test_top1", [[90, 90.0], [90, 90.2], [90, 89.9]], [1, 2])
    assert claims.judge(claim, much_worse, full).outcome == "contradicted"


def test_speedup_is_the_comparators_budget_over_the_samples_the_method_needs_to_reach_its_final_value():
    claim = Claim("p", "s", "opt-digits", Run("a", "a.py"), Run("b", "b.py"), "speedup", min_speedup=1.25)
    plain = doc("test_top1", [[80, 90, 95], [81, 91, 95]], [100, 200, 300])  # final mean 95 at 300 samples
    fast = doc("test_top1", [[90, 96, 97], [95, 96, 97]], [100, 200, 300])  # reaches 95 at 200 and 100
    v = claims.judge(claim, fast, plain)
    assert v.interval == (1.5, 3.0) and v.method == pytest.approx(2.25) and v.outcome == "holds"
    never = doc("test_top1", [[80, 90, 94], [81, 91, 94]], [100, 200, 300])
    assert claims.judge(claim, never, plain).outcome == "contradicted"  # 0 = never reached
    assert "median 0.00x" in claims.markdown([claims.judge(claim, never, plain)])


@pytest.mark.usefixtures("bwrap")
def test_runner_baselines_claims_measures_through_runner_run_and_prints_the_table(tmp_path, monkeypatch):
    """Two real runs on a small opt-digits budget (the catalogue's task through `runner run`,
    here with a 2-epoch, 2-seed budget by --params), then the table from their files."""
    small = Claim("TrAct", "faster", "opt-digits", Run("tract", "tract_sgd.py", {"lr": 0.01, "lam": 0.1}),
                  Run("sgd", "sgdm.py", {"lr": 0.01, "momentum": 0.9}), "final", margin=100.0)
    budget = json.dumps({"epochs": 2, "seeds": 2, "batch_size": 64, "test_fraction": 0.25, "split_seed": 0,
                         "target_top1": 95.0})
    monkeypatch.setattr(claims, "runner_command", lambda: [RUNNER])
    real_run = subprocess.run

    def with_budget(command, **kwargs):  # the catalogue budget would take minutes here
        return real_run([*command, "--params", budget], **kwargs)

    monkeypatch.setattr(subprocess, "run", with_budget)
    paths = claims.measure(tmp_path, (small,), say=lambda line: None)
    assert [p.name for p in paths] == ["opt-digits--tract.json", "opt-digits--sgd.json"]
    (found,) = claims.verdicts(tmp_path, (small,))
    assert found.seeds == 2 and found.outcome == "holds" and 10.0 < found.comparator <= 100.0
    table = claims.markdown([found])
    assert table.splitlines()[2].startswith("| TrAct | faster | opt-digits, 2 | tract_sgd.py")
    # The CLI prints the same table from the files already there.
    done = real_run([RUNNER, "baselines", "claims", "--out", str(tmp_path), "--table-only"], capture_output=True,
                    text=True, env={**os.environ, "COLUMNS": "400"})
    assert done.returncode == 1 and "missing result" in done.stderr  # the full CLAIMS need other files


def test_the_claims_cli_measures_only_the_tasks_asked_for_and_names_the_claims_tasks_for_an_unknown_one(tmp_path):
    env = {**os.environ, "COLUMNS": "400"}
    done = subprocess.run([RUNNER, "baselines", "claims", "--out", str(tmp_path), "--task", "opt-f9"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "no claim is measured on opt-f9; the claims' tasks: opt-digits, " \
                                    "opt-text-transformer" in done.stderr, done.stderr
    # --table-only on one task asks only for that task's files (here the first transformer run's)
    done = subprocess.run([RUNNER, "baselines", "claims", "--out", str(tmp_path), "--task", "opt-text-transformer",
                           "--table-only"], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "opt-text-transformer--" in done.stderr and "opt-digits" not in done.stderr
