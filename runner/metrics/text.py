"""Statistics of the transformer workload ``opt-text-transformer`` (runner/tracks/training/text.py):
validation bits per byte and what the result reports over seeds. numpy and the standard library.

- :func:`bits_per_byte` ``(nll_nats, count)``: total next-byte cross-entropy (nats) over ``count``
  predicted bytes → bits per byte, ``nll / count / ln 2`` (shared/PROTOCOLS.md, "Small transformer
  on 2 CPU cores"; a uniform predictor scores log2 256 = 8).
- :func:`lr_scale` ``(step, warmup, total)``: the runner's schedule, linear warm-up then cosine to 0.
- :class:`TextRun`: one seed's curves (one point per evaluation).
- :func:`summarize_text` ``(runs) -> (metrics, ci95, breakdown)``: final and best validation bpb
  and the final training loss, mean ± sample std over seeds, Student-t intervals
  (runner/metrics/training.py ``t_interval``).
- :data:`TEXT_METRIC_NOTES`: what each metric means, for the result's env.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runner.metrics.training import sample_std, t_interval


def bits_per_byte(nll_nats: float, count: int) -> float:
    """Mean cross-entropy per predicted byte in bits: ``nll_nats / count / ln 2``. Raises
    ValueError for ``count`` < 1."""
    if count < 1:
        raise ValueError(f"bits per byte of {count} predicted bytes")
    return nll_nats / count / math.log(2)


def lr_scale(step: int, warmup: int, total: int) -> float:
    """The multiple of the optimizer's learning rate used at step ``step`` (1-based) of ``total``:
    ``step / warmup`` for the first ``warmup`` steps (linear warm-up to the peak), then
    ``½ (1 + cos(π (step − warmup) / (total − warmup)))``, which reaches 0 at ``step = total``
    (cosine decay to zero, as in Loshchilov & Hutter's SGDR without restarts). Raises ValueError for
    a step outside 1..total or a warm-up outside 0..total."""
    if not 1 <= step <= total:
        raise ValueError(f"step {step} is outside 1..{total}")
    if not 0 <= warmup <= total:
        raise ValueError(f"a warm-up of {warmup} steps does not fit {total} steps")
    if step <= warmup:
        return step / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@dataclass
class TextRun:
    """One seed's run, one entry per evaluation (step 0, every ``eval_every`` steps, the last
    step): ``step``; ``samples`` (sequences trained on so far) and ``tokens`` (× context);
    ``seconds`` (training seconds so far, evaluations excluded); ``train_loss`` (mean minibatch
    cross-entropy in nats of the steps since the previous evaluation, each taken at the weights
    before its update; at step 0, the first minibatch's at the initial weights); ``val_bpb``
    (validation bits per byte of the weights after that step). ``weights_sha256`` hashes the
    final weights (float32 bytes in ``parameters()`` order); ``evaluations`` counts forward and
    backward passes (closures included)."""

    seed: int
    step: list[int] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_bpb: list[float] = field(default_factory=list)
    weights_sha256: str = ""
    evaluations: int = 0

    def curves(self) -> dict[str, list[Any]]:
        return {"step": self.step, "samples": self.samples, "tokens": self.tokens, "seconds": self.seconds,
                "train_loss": self.train_loss, "val_bpb": self.val_bpb}


def summarize_text(runs: list[TextRun]) -> tuple[dict[str, float], dict[str, list[float]], dict[str, Any]]:
    """(metrics, ci95, breakdown) of finished runs. ``val_bpb`` of a seed is its last evaluation's,
    ``best_val_bpb`` its lowest after step 0, ``final_train_loss`` its last point's; each is
    averaged over seeds with the sample std (n − 1) and, for the two bpb means, a Student-t 95%
    interval clipped at 0 (absent with one seed). Raises ValueError for no runs or a run
    without an evaluation after step 0."""
    if not runs:
        raise ValueError("no runs to summarize")
    finals, bests, losses = [], [], []
    per_seed: dict[str, Any] = {}
    for run in runs:
        trained = [(bpb, step) for bpb, step in zip(run.val_bpb, run.step, strict=True) if step > 0]
        if not trained:
            raise ValueError(f"seed {run.seed} has no evaluation after step 0")
        best, best_step = min(trained)
        finals.append(run.val_bpb[-1])
        bests.append(best)
        losses.append(run.train_loss[-1])
        per_seed[str(run.seed)] = {"val_bpb": run.val_bpb[-1], "best_val_bpb": best, "best_step": best_step,
                                   "final_train_loss": run.train_loss[-1], "steps": run.step[-1],
                                   "train_s": run.seconds[-1], "evaluations": run.evaluations,
                                   "weights_sha256": run.weights_sha256}
    metrics = {"val_bpb_mean": float(np.mean(finals)), "val_bpb_std": sample_std(finals),
               "best_val_bpb_mean": float(np.mean(bests)), "best_val_bpb_std": sample_std(bests),
               "final_train_loss_mean": float(np.mean(losses)), "runs": float(len(runs))}
    ci95 = {key: interval for key, values in (("val_bpb_mean", finals), ("best_val_bpb_mean", bests))
            if (interval := t_interval(values, 0.0)) is not None}
    return metrics, ci95, {"per_seed": per_seed}


TEXT_METRIC_NOTES = {
    "val_bpb_mean": "validation bits per byte of the weights after the last step, mean over seeds (lower is "
                    "better; a uniform predictor scores 8): mean next-byte cross-entropy / ln 2 over the "
                    "non-overlapping 128-byte windows of the validation split (window i: bytes 128i..128i+127 "
                    "predict bytes 128i+1..128i+128; the tail shorter than a window is left out)",
    "val_bpb_std": "sample standard deviation (n − 1) over seeds; 0 for one seed",
    "best_val_bpb_mean": "the lowest validation bpb of each seed over its evaluations after step 0 (every "
                         "eval_every steps and the last), mean over seeds",
    "best_val_bpb_std": "sample standard deviation (n − 1) of the best bpb over seeds",
    "final_train_loss_mean": "mean minibatch cross-entropy (nats per byte) of each seed's last eval_every "
                             "steps, each taken before its update, mean over seeds",
    "runs": "seeds trained",
    "ci95": "Student-t 95% interval of the mean over seeds (n − 1 degrees of freedom), clipped at 0; it "
            "measures seed-to-seed variation, not the validation text's sampling error; absent with one seed",
    "curves": "per seed, one point per evaluation: step, samples (sequences of 128 bytes trained on), "
              "tokens, seconds (training only, evaluations excluded), train_loss, val_bpb",
    "val_bpb": "computed by the runner outside the sandbox from its own copy of the weights, in float64 "
               "log-softmax over float32 logits",
}
