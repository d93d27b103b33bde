"""The optimizer track's loop is the runner's: the sandboxed optimizer only turns gradients into
updates (runner/opt_server.py, runner/sandboxed/optimizer_server.py). Forgeries that worked while
the submission ran the loop beside the objective score exactly what an optimizer that never steps
scores, or fail as the submission's error; optimizers whose step needs a closure (LBFGS) run, with every
evaluation counted. Each case runs through the real sandbox, as a site job does."""
from __future__ import annotations

import pytest
import torch

from runner.evaluate import evaluate, local_job_spec
from runner.spec import ErrorKind, EvaluationError, validate_result

pytestmark = pytest.mark.usefixtures("bwrap")

NEVER_STEPS = b'''import torch


class Still(torch.optim.Optimizer):
    def __init__(self, params):
        super().__init__(params, {})

    def step(self, closure=None):
        return None


def make_optimizer(params):
    return Still(params)
'''

# Forgery 1: the trajectory a perfect optimizer would leave, written where the old harness read
# it, and a progress line announcing the score; then an optimizer that does nothing.
WRITES_THE_IDEAL_TRAJECTORY = b'''import json
import os

import torch

ideal = {"ok": True, "x": [-1.0] + [-0.3] * 300, "optimize_s": 0.0}
for folder in (os.getcwd(), "/tmp"):
    with open(os.path.join(folder, "out.json"), "w") as fh:
        json.dump(ideal, fh)
print("@progress 1.0 finished: final_loss 0", flush=True)


def make_optimizer(params):
    return torch.optim.SGD(params, lr=0.0)
'''

WRITES_THE_IDEAL_TRAJECTORY_AND_EXITS = WRITES_THE_IDEAL_TRAJECTORY.replace(
    b"print(", b"os._exit(0)\nprint(")

# Forgery 2: grid-search the minimum with the harness's own objective, wherever it can be found
# in the process (modules, loaded or not, and the stack's frames); do nothing otherwise.
HUNTS_FOR_THE_OBJECTIVE = b'''import gc
import inspect
import sys

import torch

NAMES = ("synthetic_loss", "f1", "f2", "f3", "objective", "loss_fn", "SYNTHETIC_FUNCTIONS")


def find_objective():
    places = [vars(m) for m in list(sys.modules.values()) if m is not None and m.__name__ != "submission"]
    places += [frame.frame.f_locals for frame in inspect.stack()]
    places += [vars(o) for o in gc.get_objects() if isinstance(o, type(sys)) and o not in sys.modules.values()]
    for place in places:
        for name in NAMES:
            found = place.get(name) if isinstance(place, dict) else None
            if isinstance(found, dict):
                found = next(iter(found.values()), None)
            if callable(found) and getattr(found, "__module__", "") != "submission":
                return found
    return None


class Cheat(torch.optim.Optimizer):
    def __init__(self, params):
        super().__init__(params, {})

    @torch.no_grad()
    def step(self, closure=None):
        if not hasattr(self, "objective"):
            self.objective = find_objective()  # searched once: the process holds the same things each step
        objective = self.objective
        if objective is None:
            return None
        p = self.param_groups[0]["params"][0]
        grid = torch.linspace(-2, 2, 4001)
        values = []
        for x in grid:
            try:
                values.append(float(objective(torch.tensor([float(x)])).sum()))
            except Exception:
                try:
                    values.append(float(objective("f1", float(x))))
                except Exception:
                    return None
        p.fill_(float(grid[min(range(len(values)), key=values.__getitem__)]))


def make_optimizer(params):
    return Cheat(params)
'''

FAKES_A_PLATFORM_FAILURE_FRAME = b'''import gc
import json
import socket
import struct

import torch


def make_optimizer(params):
    frame = json.dumps({"op": "error", "error": {"kind": "runner_error", "message": "not my fault"}}).encode()
    for thing in gc.get_objects():
        if isinstance(thing, socket.socket) and thing.fileno() >= 0:
            thing.sendall(struct.pack("<I", len(frame)) + frame)
    return torch.optim.SGD(params, lr=0.1)
'''

LBFGS = b'''import torch


def make_optimizer(params, lr=1.0, max_iter=20):
    return torch.optim.LBFGS(params, lr=lr, max_iter=max_iter)
'''


def run(task: str, path, hparams: dict | None = None, progress=None, **params) -> dict:
    spec = local_job_spec(task, path, hparams or {})
    spec.task.params.update(params)
    return evaluate(spec, path, data_root="/nonexistent", progress=progress)


@pytest.fixture(scope="module")
def never_stepped(tmp_path_factory):
    """opt-f1's result for an optimizer whose step does nothing."""
    path = tmp_path_factory.mktemp("still") / "still.py"
    path.write_bytes(NEVER_STEPS)
    return run("opt-f1", path)


def test_an_optimizer_that_never_steps_scores_f_at_x0(never_stepped):
    assert never_stepped["metrics"] == {"final_x": -1.0, "final_loss": pytest.approx(0.49), "min_loss": pytest.approx(0.49)}


def test_writing_the_ideal_trajectory_and_printing_progress_scores_what_never_stepping_scores(never_stepped,
                                                                                              write_submission):
    shown = []
    result = run("opt-f1", write_submission(WRITES_THE_IDEAL_TRAJECTORY), progress=lambda f, m: shown.append(m))
    assert result["metrics"] == never_stepped["metrics"]
    assert result["curves"] == never_stepped["curves"]
    assert not any("final_loss" in message for message in shown)
    assert shown[-1] == "scoring the trajectory" and "step 300/300" in shown


def test_writing_the_ideal_trajectory_and_exiting_is_the_submissions_error_with_no_score(write_submission):
    with pytest.raises(EvaluationError) as caught:
        run("opt-f1", write_submission(WRITES_THE_IDEAL_TRAJECTORY_AND_EXITS))
    assert caught.value.kind == ErrorKind.RUNTIME_ERROR
    assert "the optimizer ended while building the optimizer" in caught.value.message


def test_an_optimizer_hunting_for_the_harness_objective_scores_what_never_stepping_scores(never_stepped,
                                                                                         write_submission):
    result = run("opt-f1", write_submission(HUNTS_FOR_THE_OBJECTIVE))
    assert result["metrics"] == never_stepped["metrics"]


def test_an_error_frame_claiming_a_platform_failure_is_the_submissions_runtime_error(write_submission):
    with pytest.raises(EvaluationError) as caught:
        run("opt-f1", write_submission(FAKES_A_PLATFORM_FAILURE_FRAME))
    assert caught.value.kind == ErrorKind.RUNTIME_ERROR
    assert "'runner_error', a kind only the platform may report: not my fault" in caught.value.message


@pytest.mark.parametrize("task", ["opt-f1", "opt-f2", "opt-f3"])
def test_lbfgs_runs_on_the_synthetic_functions_with_its_closure_calls_counted(task, write_submission):
    result = run(task, write_submission(LBFGS), {"lr": 0.1})
    validate_result(result, task)
    env, trajectory = result["env"], result["curves"]["trajectory"]
    assert env["closure"] is True and env["loop"] == "runner"
    assert len(trajectory["x"]) == 301
    assert 300 <= env["evaluations"] <= env["max_evaluations"]
    assert result["metrics"]["final_loss"] < trajectory["loss"][0]  # it optimizes


def test_an_optimizer_out_of_evaluations_stops_where_its_last_complete_step_left_x(write_submission):
    result = run("opt-f1", write_submission(LBFGS), {"lr": 0.1}, max_evaluations=45)
    assert result["env"]["evaluations"] == 45
    trajectory = result["curves"]["trajectory"]
    assert 2 <= len(trajectory["x"]) < 301
    assert result["metrics"]["final_x"] == trajectory["x"][-1]


# --------------------------------------------------------------------------------------------
# Training tasks (CPU): the loop, the model, the data and the checkpoints are the runner's.
# --------------------------------------------------------------------------------------------
WRITES_PERFECT_WEIGHTS = b'''import json
import os

import torch
from safetensors.torch import save_file

# Weights of the shapes the runner expects, and the curves it used to read, where the old
# harness left them; a progress line announcing a perfect score; then no update at all.
state = {"classifier.weight": torch.zeros(10, 256), "classifier.bias": torch.zeros(10)}
for name in ("ckpt_s0_e001.safetensors", "ckpt_s0_e002.safetensors"):
    save_file(state, os.path.join(os.getcwd(), name))
with open(os.path.join(os.getcwd(), "out.json"), "w") as fh:
    json.dump({"ok": True, "runs": [{"seed": 0, "train_loss": [0.0], "seconds": [0.0]}]}, fh)
print("@progress 1.0 finished: test top-1 100", flush=True)


def make_optimizer(params):
    return torch.optim.SGD(params, lr=0.0)
'''


def train(path, work_dir, hparams: dict | None = None, progress=None, epochs: int = 1) -> dict:
    from runner.tracks.train import evaluate_training

    spec = local_job_spec("opt-digits", path, hparams or {})
    spec.task.params.update(epochs=epochs, seeds=1)
    work_dir.mkdir(parents=True)
    result = evaluate_training(spec, path, work_dir=work_dir, data_root="/nonexistent", trust=False, device="cpu",
                               progress=progress or (lambda fraction, message: None))
    return validate_result(result, "opt-digits")


def test_on_digits_weights_and_curves_left_in_the_sandbox_score_what_never_stepping_scores(tmp_path,
                                                                                             write_submission):
    still = train(write_submission(NEVER_STEPS, name="still.py"), tmp_path / "still")
    shown = []
    forged = train(write_submission(WRITES_PERFECT_WEIGHTS, name="forged.py"), tmp_path / "forged",
                   progress=lambda fraction, message: shown.append(message))
    assert forged["metrics"] == still["metrics"]
    assert forged["curves"]["seed_0"]["test_top1"] == still["curves"]["seed_0"]["test_top1"]
    assert forged["env"]["loop"] == "runner" and forged["env"]["sandbox"] == "bwrap"
    assert not any("100" in message for message in shown)


def test_lbfgs_trains_the_digits_cnn_with_each_closure_a_counted_forward_and_backward(tmp_path, write_submission):
    result = train(write_submission(LBFGS), tmp_path / "lbfgs", {"lr": 0.1, "max_iter": 4})
    env = result["env"]
    steps = env["budget"]["steps_per_epoch"]
    assert env["closure"] is True
    assert steps < env["evaluations"] <= steps * 6  # its step's gradient, and up to 5 closure calls a step
    assert result["metrics"]["test_top1_mean"] > 20  # it learns (chance is 10)


# --------------------------------------------------------------------------------------------
# Hooks: what an optimizer may ask the runner for besides gradients.
# --------------------------------------------------------------------------------------------
WANTS_FIRST_LAYER_STATS = b'''import torch


class Spy(torch.optim.SGD):
    wants_first_layer_stats = True
    seen = []

    def step(self, closure=None):
        stats = self.first_layer_stats.clone()
        Spy.seen.append(stats)
        if len(Spy.seen) == 3:
            a, b, c = Spy.seen
            symmetric = bool(torch.allclose(c, c.T))
            psd = bool(torch.linalg.eigvalsh(c.double()).min() > -1e-5)
            changed = not torch.equal(a, b) and not torch.equal(b, c)
            raise RuntimeError(f"STATS {tuple(c.shape)} symmetric {symmetric} psd {psd} changed {changed} "
                               f"trace {float(c.trace()):.3f}")
        return super().step(closure)


def make_optimizer(params, lr=0.01):
    return Spy(params, lr=lr)
'''


def test_an_optimizer_that_wants_first_layer_statistics_gets_xtx_over_b_of_each_batch(tmp_path, write_submission):
    with pytest.raises(EvaluationError) as caught:
        train(write_submission(WANTS_FIRST_LAYER_STATS), tmp_path / "tract")
    message = caught.value.message
    # digits: the first conv takes 1 channel through 3 × 3 kernels, so n = 9; standardized
    # inputs make the trace about 9 (one per patch coordinate, less where padding adds zeros)
    assert "STATS (9, 9) symmetric True psd True changed True" in message
    trace = float(message.split("trace ")[1].split()[0])
    assert 4.0 < trace < 9.5


def test_first_layer_statistics_equal_the_unfolded_patches_gram_matrix():
    from runner.tracks.training.loop import RunnerHarness

    harness = RunnerHarness.__new__(RunnerHarness)
    harness.first_layer = torch.nn.Conv2d(2, 4, 3, padding=1)
    x = torch.randn(5, 2, 6, 6)
    patches = torch.nn.functional.unfold(x, 3, padding=1)  # [5, 18, 36]
    X = patches.permute(0, 2, 1).reshape(-1, 18).double()
    expected = (X.T @ X / X.shape[0]).float()
    assert torch.allclose(harness.first_layer_stats(x), expected, atol=1e-6)


def test_the_documented_tract_example_trains_the_digits_cnn(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tract_sgd.py"
    result = train(example, tmp_path / "tract-example", {"lr": 0.01})
    assert result["metrics"]["test_top1_mean"] > 50  # chance is 10


# next_batch_size: the optimizer sets the next batch size; the budget is counted in samples.
ASKS_FOR_BATCH_SIZES = b'''import torch


class Sizes(torch.optim.SGD):
    wants_next_batch_size = True
    plan = [200, 8, 300, 1024]

    def step(self, closure=None):
        self.next_batch_size = Sizes.plan.pop(0) if Sizes.plan else None
        return super().step(closure)


def make_optimizer(params, lr=0.01, first=None):
    if first is not None:
        Sizes.plan.insert(0, first)
    return Sizes(params, lr=lr)
'''


def steps_at(runs: list[list[int]]) -> list[int]:
    """Each step's batch size, from env.samples' runs of [size, steps in a row]."""
    return [size for size, count in runs for _ in range(count)]


def test_an_optimizer_choosing_batch_sizes_gets_them_and_the_sample_budget_ends_the_run(tmp_path, write_submission):
    result = train(write_submission(ASKS_FOR_BATCH_SIZES), tmp_path / "sizes")
    counted = result["env"]["samples"][0]
    sizes, n_train = steps_at(counted["batch_sizes"]), counted["samples"]  # one epoch: the budget is n_train samples
    # the budget's batch first, then each one asked for; 1,024 is cut to the 775 the budget has left
    assert sizes == [64, 200, 8, 300, 1347 - 572]
    assert sum(sizes) == n_train == 1347  # digits: 1,797 less the quarter held out
    assert counted["steps"] == len(sizes) and counted["scored"] == 0
    assert len(result["curves"]["seed_0"]["train_loss"]) == 1
    assert result["curves"]["seed_0"]["samples"] == [1347]  # the sample loop's counter at the epoch's end


def test_a_batch_size_out_of_the_tasks_bounds_is_wrong_output_naming_them(tmp_path, write_submission):
    with pytest.raises(EvaluationError) as caught:
        train(write_submission(ASKS_FOR_BATCH_SIZES), tmp_path / "too-big", {"first": 5000})
    assert caught.value.kind == ErrorKind.WRONG_OUTPUT
    assert "asked for a batch size of 5000; this task's bounds are 8..1024 examples" in caught.value.message


def test_the_documented_growing_batch_example_trains_the_digits_cnn(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "growing_batch_sgd.py"
    result = train(example, tmp_path / "growing", {"grow_every": 4})
    runs = result["env"]["samples"][0]["batch_sizes"]
    assert runs == [[64, 1], [16, 3], [32, 4], [64, 4], [128, 4], [256, 1], [83, 1]]  # [size, steps in a row]
    sizes = steps_at(runs)
    # 64 (the budget's, the first of the 4 steps at each size), then 16 doubling every 4 steps up to
    # the cap of 256; the last batch cut to what the 1,347-sample budget has left
    assert sizes == [64] + [16] * 3 + [32] * 4 + [64] * 4 + [128] * 4 + [256, 83]
    assert result["metrics"]["test_top1_mean"] > 50  # chance is 10


# el2n_scores: per-example scores the runner computes, and a selection the optimizer returns.
def test_el2n_scores_are_the_distance_of_the_softmax_from_the_one_hot_label():
    from types import SimpleNamespace

    from runner.tracks.training.loop import RunnerHarness

    harness = RunnerHarness.__new__(RunnerHarness)
    harness.data = SimpleNamespace(size=3, labels=torch.tensor([0, 1, 1]))
    harness.standardized = torch.zeros(3, 1, 1, 1)
    harness.batch = 2
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 50.0]])

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return logits[:len(x)] if len(x) == 2 else logits[2:]

    # by hand: [½, ½] − [1, 0] → √(¼ + ¼); softmax(2, 0) = [0.8808, 0.1192] − [0, 1] → √2 · 0.8808; ≈ 0
    scores = harness.el2n_scores(Fixed())
    assert scores.shape == (3,) and scores.dtype == torch.float32
    assert scores.tolist() == pytest.approx([0.5 ** 0.5, 2 ** 0.5 * 0.880797, 0.0], abs=1e-5)


def test_the_selection_restricts_the_examples_drawn_to_those_selected():
    from types import SimpleNamespace

    from runner.tracks.training.loop import RunnerHarness

    harness = RunnerHarness.__new__(RunnerHarness)
    harness.data = SimpleNamespace(size=10)
    harness.config = SimpleNamespace(augment="none")
    harness.device = torch.device("cpu")
    selection = torch.zeros(10)
    selection[[1, 4, 7]] = 1.0
    server = SimpleNamespace(hooks={"el2n_scores"}, shared=SimpleNamespace(extras={"selection": selection}))
    plan = harness._draw(torch.Generator().manual_seed(0), server, "epoch 1")
    assert sorted(plan[0].tolist()) == [1, 4, 7]
    selection.zero_()
    with pytest.raises(EvaluationError) as caught:
        harness._draw(torch.Generator().manual_seed(0), server, "epoch 1")
    assert caught.value.kind == ErrorKind.WRONG_OUTPUT and "holds no example" in caught.value.message


SPIES_ON_EL2N = b'''import torch


class Spy(torch.optim.SGD):
    wants_el2n_scores = True
    count = 0

    def step(self, closure=None):
        Spy.count += 1
        if Spy.count == 1:
            self.request_scores = True
        elif Spy.count == 2:
            s = self.el2n_scores
            raise RuntimeError(f"SCORES {tuple(s.shape)} {s.dtype} min {float(s.min()):.3f} "
                               f"max {float(s.max()):.3f} selection {float(self.selection.sum()):.0f}")
        return super().step(closure)


def make_optimizer(params, lr=0.01):
    return Spy(params, lr=lr)
'''


def test_el2n_scores_reach_the_optimizer_in_shared_memory_after_the_step_that_asked(tmp_path, write_submission):
    with pytest.raises(EvaluationError) as caught:
        train(write_submission(SPIES_ON_EL2N), tmp_path / "el2n-spy", epochs=2)
    message = caught.value.message
    assert "SCORES (1347,) torch.float32" in message and "selection 1347" in message  # all selected at first
    low, high = (float(message.split(word)[1].split()[0]) for word in ("min ", "max "))
    assert 0.0 <= low <= high <= 2 ** 0.5 and high > 0.5  # barely trained: most scores near √(0.9) ≈ 0.95


def test_the_documented_el2n_example_scores_once_and_trains_on_the_hardest_half(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "el2n_prune.py"
    result = train(example, tmp_path / "el2n", {"score_after": 5}, epochs=2)
    counted = result["env"]["samples"][0]
    assert counted["scored"] == 1347 and counted["samples"] == 2 * 1347  # scoring counts n_train samples
    # 5 steps of 64, the scores, then the 1,027 samples left in batches of 64 drawn from the 673 kept
    assert steps_at(counted["batch_sizes"]) == [64] * 5 + [64] * 16 + [3]
    assert result["env"]["evaluations"] == counted["steps"] == 22
    assert len(result["curves"]["seed_0"]["train_loss"]) == 2
    # epoch 1 ends at the scoring, when the counter jumps from 320 past 1,347
    assert result["curves"]["seed_0"]["samples"] == [320 + 1347, 2 * 1347]


@pytest.mark.parametrize("hook", ["first_layer_stats", "next_batch_size", "el2n_scores", "gradient_variance"])
def test_the_sandboxed_training_program_refuses_an_optimizer_that_wants_a_hook_in_one_line(hook):
    from types import SimpleNamespace

    from runner.sandboxed import optimizer_loader
    from runner.sandboxed.rules import INVALID_ARTIFACT, ChildError

    wants = type("Wants", (torch.optim.SGD,), {f"wants_{hook}": True})
    module = SimpleNamespace(make_optimizer=lambda params: wants(params, lr=0.1))
    with pytest.raises(ChildError) as caught:
        optimizer_loader.make_user_optimizer(module, [torch.nn.Parameter(torch.zeros(2))], {}, "submission.py")
    assert caught.value.kind == INVALID_ARTIFACT and "\n" not in caught.value.message
    assert f"Wants wants {hook}, which only the runner's loop provides" in caught.value.message


# gradient_variance: the unbiased per-coordinate variance of the batch's per-sample gradients.
def per_example_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[b, P]: each example's gradient on its own, by plain autograd, flat in parameters() order."""
    rows = []
    for i in range(len(y)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        rows.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return torch.stack(rows).double()


def test_gradient_variance_is_the_unbiased_variance_of_the_per_example_gradients():
    from runner.tracks.training.variance import gradient_variance

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    variance = gradient_variance(model, x, y)
    g = per_example_gradients(model, x, y)  # [4, 8]: weight 2 × 3, then bias 2
    by_hand = ((g - g.mean(0)).square().sum(0) / 3).float()
    assert variance.shape == (8,) and variance.dtype == torch.float32
    assert torch.allclose(variance, by_hand, atol=1e-7)
    merged = gradient_variance(model, x, y, chunk_bytes=3 * 4 * 8)  # chunks of 3 and 1 examples, merged
    assert torch.allclose(merged, by_hand, atol=1e-7)
    assert gradient_variance(model, x[:1], y[:1]).tolist() == [0.0] * 8  # one example: no variance


def test_gradient_variance_holds_batchnorm_at_the_batchs_statistics_and_leaves_its_running_ones():
    import copy

    from runner.tracks.training.variance import gradient_variance

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 2 * 2, 3))
    model.train()
    x, y = torch.randn(5, 1, 4, 4), torch.tensor([0, 1, 2, 1, 0])
    running = [b.clone() for b in model.buffers()]
    variance = gradient_variance(model, x, y)
    assert all(torch.equal(a, b) for a, b in zip(running, model.buffers(), strict=True)) and model.training
    # the same per-example gradients by hand: BatchNorm in eval mode with the batch's mean and
    # biased variance of its input (the conv's output) as its running statistics
    fixed = copy.deepcopy(model)
    with torch.no_grad():
        h = fixed[0](x)
        fixed[1].running_mean.copy_(h.mean((0, 2, 3)))
        fixed[1].running_var.copy_(h.var((0, 2, 3), unbiased=False))
    fixed.eval()
    g = per_example_gradients(fixed, x, y)
    assert torch.allclose(variance.double(), g.var(0), atol=1e-6)


NORM_TEST_SPY = b'''import math

import torch


class NormTest(torch.optim.SGD):
    wants_gradient_variance = True
    wants_next_batch_size = True
    seen = []

    def step(self, closure=None):
        params = self.param_groups[0]["params"]
        shapes_match = all(v.shape == p.shape for v, p in zip(self.gradient_variance, params))
        sum_v = sum(float(v.double().sum()) for v in self.gradient_variance)
        g2 = sum(float(p.grad.double().square().sum()) for p in params)
        b = self.batch_size_now
        asked = b if sum_v / b <= 0.25 * g2 else min(1024, math.ceil(sum_v / (0.25 * g2)))  # eta 0.5
        NormTest.seen.append(f"{b}:{sum_v!r}:{g2!r}:{asked}:{shapes_match}")
        if len(NormTest.seen) == 5:
            raise RuntimeError("SEEN " + " ".join(NormTest.seen))
        self.next_batch_size = asked
        return super().step(closure)


def make_optimizer(params, lr=0.05):
    return NormTest(params, lr=lr)
'''


def test_an_optimizer_growing_its_batch_by_the_norm_test_gets_the_variances_and_the_sizes_it_asked_for(
        tmp_path, write_submission):
    import math

    with pytest.raises(EvaluationError) as caught:
        train(write_submission(NORM_TEST_SPY), tmp_path / "norm-test", epochs=20)
    seen = [entry.split(":") for entry in caught.value.message.split("SEEN ")[1].split()[:5]]
    sizes = [int(b) for b, *_ in seen]
    assert sizes[0] == 64  # the budget's batch first
    for (b, sum_v, g2, asked, shapes_match), used_next in zip(seen, sizes[1:] + [None], strict=True):
        sum_v, g2, b = float(sum_v), float(g2), int(b)
        assert shapes_match == "True" and sum_v > 0 and g2 > 0
        rule = b if sum_v / b <= 0.5 ** 2 * g2 else min(1024, math.ceil(sum_v / (0.5 ** 2 * g2)))
        assert int(asked) == rule
        if used_next is not None:
            assert used_next == rule  # the runner drew the next batch at the size the test asked for


def test_the_documented_adagradnorm_norm_test_example_grows_its_batch_and_trains(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "adagradnorm_norm_test.py"
    # η 0.5 (the authors' CIFAR setting): on digits the default 0.1 asks for the cap of 1,024 at once
    result = train(example, tmp_path / "adagradnorm", {"eta": 0.5}, epochs=3)
    counted = result["env"]["samples"][0]
    sizes = steps_at(counted["batch_sizes"])
    assert sum(sizes) == counted["samples"] == 3 * 1347
    grown = sizes[1:-1]  # after the budget's first batch of 64, before the last one cut to the budget
    assert grown == sorted(grown) and len(set(grown)) > 3  # batches only grow, step by step
    assert all(8 <= size <= 1024 for size in grown)
    assert counted["variance_s"] > 0  # seconds, beside the budget
    assert result["metrics"]["test_top1_mean"] > 50  # chance is 10
