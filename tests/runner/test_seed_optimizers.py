"""The seed methods as reference baselines (runner/baselines/optimizers/, shared/PROTOCOLS.md "The
seed methods"): each file, loaded as the optimizer server loads a submission, against a hand
computation on a problem of a few parameters. The expected numbers come from the definitions,
written out here in float64 with plain arithmetic, never from the files' own helpers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import runner
from runner.sandboxed import optimizer_loader
from runner.sandboxed.rules import BAD_HPARAMS, ChildError

BASELINES = Path(runner.__file__).parent / "baselines" / "optimizers"
MANIFEST = json.loads((BASELINES / "baselines.json").read_text())["baselines"]


def build(file: str, params: list[torch.Tensor], **hparams):
    """``make_optimizer(params, **hparams)`` of a baseline file, checked as the server checks a submission."""
    module = optimizer_loader.exec_module(optimizer_loader.compile_source((BASELINES / file).read_text(), file), file)
    return optimizer_loader.make_user_optimizer(module, params, hparams, file, closure_given=True)


def parameter(*values: float, shape: tuple[int, ...] | None = None) -> torch.nn.Parameter:
    tensor = torch.tensor(values, dtype=torch.float32)
    return torch.nn.Parameter(tensor.view(shape) if shape else tensor)


def close(tensor: torch.Tensor, expected: list[float], tol: float = 1e-6) -> bool:
    return torch.allclose(tensor.detach().double().flatten(), torch.tensor(expected, dtype=torch.float64),
                          rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------
# TrAct: G = G_plain (XᵀX / b + λ I)⁻¹ on the first parameter only.
# --------------------------------------------------------------------------------------------
def inverse_2x2(a: float, b: float, d: float) -> list[list[float]]:
    det = a * d - b * b
    return [[d / det, -b / det], [-b / det, a / det]]


def tract_by_hand(grad_rows: list[list[float]], stats: list[list[float]], lam: float) -> list[list[float]]:
    inv = inverse_2x2(stats[0][0] + lam, stats[0][1], stats[1][1] + lam)
    return [[row[0] * inv[0][0] + row[1] * inv[1][0], row[0] * inv[0][1] + row[1] * inv[1][1]] for row in grad_rows]


# A 1×1 convolution from 2 channels to 2: weight [2, 2, 1, 1] (n = 2), bias [2]; X from 3 patches.
PATCHES = [[1.0, 2.0], [0.5, -1.0], [-2.0, 0.0]]
STATS = [[sum(p[i] * p[j] for p in PATCHES) / 3 for j in range(2)] for i in range(2)]
GRAD_W = [[0.3, -0.2], [0.1, 0.4]]
GRAD_B = [0.05, -0.07]


def tract_problem():
    weight = parameter(1.0, -1.0, 0.5, 2.0, shape=(2, 2, 1, 1))
    bias = parameter(0.1, 0.2)
    weight.grad = torch.tensor(GRAD_W, dtype=torch.float32).view(2, 2, 1, 1)
    bias.grad = torch.tensor(GRAD_B, dtype=torch.float32)
    return weight, bias


def test_tract_sgd_steps_momentum_sgd_on_g_times_the_regularized_inverse_and_leaves_the_bias_gradient():
    weight, bias = tract_problem()
    optimizer = build("tract_sgd.py", [weight, bias], lr=0.1, momentum=0.9, lam=0.1)
    assert optimizer.wants_first_layer_stats is True
    optimizer.first_layer_stats = torch.tensor(STATS, dtype=torch.float32)
    g = tract_by_hand(GRAD_W, STATS, 0.1)
    w0 = [1.0, -1.0, 0.5, 2.0]
    optimizer.step()
    first = [w - 0.1 * gi for w, gi in zip(w0, g[0] + g[1], strict=True)]
    assert close(weight, first, 1e-5)
    assert close(bias, [0.1 - 0.1 * 0.05, 0.2 + 0.1 * 0.07])  # the plain gradient
    # a second step with the same plain gradients: momentum buffer 0.9 G + G
    weight.grad.copy_(torch.tensor(GRAD_W).view(2, 2, 1, 1))
    bias.grad.copy_(torch.tensor(GRAD_B))
    optimizer.step()
    assert close(weight, [w - 0.1 * 1.9 * gi for w, gi in zip(first, g[0] + g[1], strict=True)], 1e-5)


def test_tract_adam_feeds_adams_moments_with_the_tract_gradient():
    weight, bias = tract_problem()
    optimizer = build("tract_adam.py", [weight, bias], lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, lam=0.5)
    optimizer.first_layer_stats = torch.tensor(STATS, dtype=torch.float32)
    g = tract_by_hand(GRAD_W, STATS, 0.5)
    flat = g[0] + g[1]
    optimizer.step()
    # Adam's first step: m̂ = G, v̂ = G², so the update is lr · G / (|G| + eps)
    expected = [w - 0.01 * gi / (abs(gi) + 1e-8) for w, gi in zip([1.0, -1.0, 0.5, 2.0], flat, strict=True)]
    assert close(weight, expected, 1e-6)
    weight.grad.copy_(torch.tensor(GRAD_W).view(2, 2, 1, 1))
    bias.grad.copy_(torch.tensor(GRAD_B))
    optimizer.step()
    # second step, same G: m = 0.1·0.9 G + 0.1 G = 0.19 G, v = 0.999·0.001 G² + 0.001 G²
    second = []
    for w, gi in zip(expected, flat, strict=True):
        m_hat = 0.19 * gi / (1 - 0.9 ** 2)
        v_hat = (0.999 * 0.001 + 0.001) * gi * gi / (1 - 0.999 ** 2)
        second.append(w - 0.01 * m_hat / (math.sqrt(v_hat) + 1e-8))
    assert close(weight, second, 1e-6)


@pytest.mark.parametrize("file", ["tract_sgd.py", "tract_adam.py"])
def test_tract_with_a_huge_lambda_is_the_plain_gradient_over_lambda(file):
    weight, bias = tract_problem()
    hparams = {"lr": 1.0, "momentum": 0.0} if file == "tract_sgd.py" else {"lr": 1.0}
    optimizer = build(file, [weight, bias], lam=1e6, **hparams)
    optimizer.first_layer_stats = torch.tensor(STATS, dtype=torch.float32)
    plain = torch.tensor(GRAD_W).view(2, 2, 1, 1)
    if file == "tract_sgd.py":  # from zero weights, so float32 keeps the tiny step exactly enough
        with torch.no_grad():
            weight.zero_()
        optimizer.step()
        assert torch.allclose(-weight.detach() * 1e6, plain, rtol=1e-5)
    else:  # Adam normalizes the scale away; check the gradient it was handed instead
        optimizer.step()
        assert torch.allclose(weight.grad * 1e6, plain, rtol=1e-5)


@pytest.mark.parametrize("file", ["tract_sgd.py", "tract_adam.py"])
def test_tract_refuses_a_lambda_that_is_not_positive_as_bad_hyperparameters(file):
    weight, bias = tract_problem()
    with pytest.raises(ChildError) as caught:
        build(file, [weight, bias], lam=0.0)
    assert caught.value.kind == BAD_HPARAMS and "lam (TrAct's λ) must be positive" in caught.value.message


# --------------------------------------------------------------------------------------------
# Coordinate-wise clipping: τ the (⌊c·d⌋ + 1)-th largest |g_j| over the whole model.
# --------------------------------------------------------------------------------------------
def clipping_problem():
    a, b = parameter(1.0, 1.0), parameter(1.0, 1.0)
    a.grad, b.grad = torch.tensor([3.0, -1.0]), torch.tensor([0.5, -4.0])
    return a, b


@pytest.mark.parametrize(("c", "scale", "tau", "clipped"), [
    (0.0, 1.0, 4.0, [3.0, -1.0, 0.5, -4.0]),  # c = 0: τ = the largest, nothing is cut
    (0.25, 1.0, 3.0, [3.0, -1.0, 0.5, -3.0]),  # ⌊0.25·4⌋ + 1 = 2nd largest
    (0.5, 1.0, 1.0, [1.0, -1.0, 0.5, -1.0]),  # 3rd largest
    (0.5, 2.0, 1.0, [2.0, -1.0, 0.5, -2.0]),  # cut at s·τ
])
def test_clipped_sgd_cuts_the_top_coordinates_of_the_whole_model_before_momentum(c, scale, tau, clipped):
    a, b = clipping_problem()
    optimizer = build("clip_sgd.py", [a, b], lr=0.1, momentum=0.9, c=c, threshold_scale=scale)
    optimizer.step()
    assert optimizer.tau == tau
    assert close(torch.cat([a, b]), [1.0 - 0.1 * g for g in clipped])
    a.grad.copy_(torch.tensor([3.0, -1.0]))
    b.grad.copy_(torch.tensor([0.5, -4.0]))
    optimizer.step()  # the momentum buffer holds clipped gradients only: 0.9 ĝ + ĝ
    assert close(torch.cat([a, b]), [1.0 - 0.1 * g - 0.1 * 1.9 * g for g in clipped])


def test_clipped_adam_feeds_the_clipped_gradient_to_the_first_moment_and_the_raw_one_to_the_second():
    a, b = clipping_problem()
    optimizer = build("clip_adam.py", [a, b], lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, c=0.5)
    raw, clipped = [3.0, -1.0, 0.5, -4.0], [1.0, -1.0, 0.5, -1.0]
    theta = [1.0] * 4
    m, v = [0.0] * 4, [0.0] * 4
    for t in (1, 2):
        a.grad.copy_(torch.tensor(raw[:2]))
        b.grad.copy_(torch.tensor(raw[2:]))
        optimizer.step()
        for j in range(4):
            m[j] = 0.9 * m[j] + 0.1 * clipped[j]
            v[j] = 0.999 * v[j] + 0.001 * raw[j] ** 2
            theta[j] -= 0.01 * (m[j] / (1 - 0.9 ** t)) / (math.sqrt(v[j] / (1 - 0.999 ** t)) + 1e-8)
        assert close(torch.cat([a, b]), theta)
    assert optimizer.tau == 1.0


@pytest.mark.parametrize("file", ["clip_sgd.py", "clip_adam.py"])
@pytest.mark.parametrize("c", [1.0, 1.5, -0.1])
def test_clipping_refuses_a_fraction_outside_zero_to_one_as_bad_hyperparameters(file, c):
    a, b = clipping_problem()
    with pytest.raises(ChildError) as caught:
        build(file, [a, b], c=c)
    assert caught.value.kind == BAD_HPARAMS
    assert "c (the fraction of coordinates clipped) must lie in [0, 1)" in caught.value.message


# --------------------------------------------------------------------------------------------
# AdAdaGrad (coordinate-wise) and AdAdaGradNorm (scalar): the step, and the batch's test.
# --------------------------------------------------------------------------------------------
MEAN = [0.5, -0.1, 0.0]  # ḡ: the third coordinate's mean is 0 (skipped by the coordinate-wise test)
VARIANCE = [1.0, 0.2, 5.0]  # V_j


def growing_problem(file: str, batch: int, **hparams):
    p = parameter(1.0, 2.0, 3.0)
    p.grad = torch.tensor(MEAN)
    optimizer = build(file, [p], **hparams)
    assert optimizer.wants_gradient_variance is True and optimizer.wants_next_batch_size is True
    optimizer.gradient_variance = [torch.tensor(VARIANCE)]
    optimizer.batch_size_now = batch
    return p, optimizer


@pytest.mark.parametrize(("batch", "b_max", "expected"), [
    (64, 1024, 80),  # max_j V_j / (η² ḡ_j²) = max(16, 80) = 80 > 64: grow to ⌈80⌉
    (80, 1024, 80),  # V_j / 80 ≤ η² ḡ_j² for every j: keep
    (100, 1024, 100),
    (64, 70, 70),  # capped at b_max
])
def test_adadagrad_grows_its_batch_by_the_coordinatewise_test_and_steps_per_coordinate(batch, b_max, expected):
    eta = 0.5
    wanted = max(VARIANCE[j] / (eta ** 2 * MEAN[j] ** 2) for j in range(3) if MEAN[j] != 0)
    assert wanted == pytest.approx(80.0)
    p, optimizer = growing_problem("adadagrad.py", batch, lr=0.1, eta=eta, s0=0.01, b_max=b_max)
    optimizer.step()
    assert optimizer.next_batch_size == expected
    s = [math.sqrt(0.01 ** 2 + g * g) for g in MEAN]
    assert close(p, [x - 0.1 * g / sj for x, g, sj in zip([1.0, 2.0, 3.0], MEAN, s, strict=True)])


def test_adadagrad_never_shrinks_after_a_batch_the_runner_cut_and_stops_testing_at_b_max():
    p, optimizer = growing_problem("adadagrad.py", 64, lr=0.1, eta=0.5, b_max=1024)
    optimizer.step()
    assert optimizer.next_batch_size == 80
    optimizer.batch_size_now = 12  # the budget's last, cut batch: the test would ask ⌈80⌉ again, never 12
    optimizer.gradient_variance = [torch.tensor([0.0, 0.0, 0.0])]
    optimizer.step()
    assert optimizer.next_batch_size == 80
    p, optimizer = growing_problem("adadagrad.py", 1024, lr=0.1, eta=0.01, b_max=1024)
    optimizer.step()
    assert optimizer.next_batch_size == 1024


@pytest.mark.parametrize(("batch", "eta", "b_max", "expected"), [
    (64, 0.5, 1024, 96),  # Σ V / b = 6.2 / 64 > 0.25 · 0.26: ⌈6.2 / 0.065⌉ = ⌈95.38⌉
    (96, 0.5, 1024, 96),  # 6.2 / 96 ≤ 0.065: keep
    (64, 0.1, 1024, 1024),  # ⌈6.2 / 0.0026⌉ = 2385, capped
    (64, 2.0, 1024, 64),  # 6.2 / 64 ≤ 4 · 0.26: keep
])
def test_adadagradnorm_grows_its_batch_by_the_norm_test_and_steps_by_the_scalar_accumulator(batch, eta, b_max,
                                                                                             expected):
    sum_v, norm_sq = sum(VARIANCE), sum(g * g for g in MEAN)
    rule = batch if sum_v / batch <= eta ** 2 * norm_sq else min(b_max, math.ceil(sum_v / (eta ** 2 * norm_sq)))
    assert rule == expected
    p, optimizer = growing_problem("adadagradnorm.py", batch, lr=0.1, eta=eta, s0=0.01, b_max=b_max)
    optimizer.step()
    assert optimizer.next_batch_size == expected
    s = math.sqrt(0.01 ** 2 + norm_sq)
    assert close(p, [x - 0.1 / s * g for x, g in zip([1.0, 2.0, 3.0], MEAN, strict=True)])
    p.grad.copy_(torch.tensor(MEAN))
    optimizer.step()
    s2 = math.sqrt(0.01 ** 2 + 2 * norm_sq)
    assert close(p, [x - 0.1 / s * g - 0.1 / s2 * g for x, g in zip([1.0, 2.0, 3.0], MEAN, strict=True)])


@pytest.mark.parametrize("file", ["adadagrad.py", "adadagradnorm.py"])
@pytest.mark.parametrize("hparams", [{"b_max": 0}, {"b_max": 1.5}, {"eta": 0.0}])
def test_the_growing_batch_methods_refuse_a_cap_or_eta_that_makes_no_sense(file, hparams):
    with pytest.raises(ChildError) as caught:
        build(file, [parameter(1.0)], **hparams)
    assert caught.value.kind == BAD_HPARAMS


# --------------------------------------------------------------------------------------------
# Data diets: score once, then draw only the highest-scoring fraction.
# --------------------------------------------------------------------------------------------
SCORES = [0.1, 0.9, 0.5, 0.7, 0.3, 0.2]


@pytest.mark.parametrize(("file", "hook"), [("el2n_diet.py", "el2n_scores"), ("grand_diet.py", "grand_scores")])
@pytest.mark.parametrize(("keep", "offset", "kept"), [
    (0.5, 0.0, {1, 3, 2}),  # the three highest scores
    (0.5, 1 / 6, {3, 2, 4}),  # the very hardest dropped first
    (0.01, 0.0, {1}),  # at least one
])
def test_a_diet_asks_for_scores_after_score_after_steps_then_selects_the_highest_fraction(file, hook, keep, offset,
                                                                                          kept):
    p = parameter(1.0, -1.0)
    optimizer = build(file, [p], lr=0.1, momentum=0.0, score_after=2, keep=keep, offset=offset)
    assert getattr(optimizer, f"wants_{hook}") is True
    optimizer.selection = torch.ones(6)
    for step in (1, 2):
        p.grad = torch.tensor([1.0, 1.0])
        optimizer.step()
        assert getattr(optimizer, "request_scores", False) is (step == 2)
        assert torch.equal(optimizer.selection, torch.ones(6))
    optimizer.request_scores = False  # the server resets it when it reads it
    setattr(optimizer, hook, torch.tensor(SCORES))
    optimizer.step()
    assert {i for i in range(6) if optimizer.selection[i] != 0} == kept
    assert close(p, [1.0 - 0.3, -1.0 - 0.3])  # three plain SGD steps of lr 0.1


@pytest.mark.parametrize("file", ["el2n_diet.py", "grand_diet.py"])
def test_a_diet_scoring_at_initialization_asks_in_its_first_step_without_moving_the_weights(file):
    p = parameter(1.0, -1.0)
    optimizer = build(file, [p], lr=0.1, momentum=0.0, score_after=0, keep=0.5)
    p.grad = torch.tensor([1.0, 1.0])
    optimizer.step()
    assert optimizer.request_scores is True and close(p, [1.0, -1.0])
    optimizer.selection = torch.ones(6)
    optimizer.el2n_scores = optimizer.grand_scores = torch.tensor(SCORES)
    optimizer.step()
    assert close(p, [0.9, -1.1]) and optimizer.selection.tolist() == [0, 1, 1, 1, 0, 0]


# --------------------------------------------------------------------------------------------
# L-BFGS: torch's, stepped with a closure.
# --------------------------------------------------------------------------------------------
def test_lbfgs_steps_with_a_closure_as_the_two_loop_recursion_says():
    """f(θ) = ½ θᵀAθ − bᵀθ, A = [[3, 1], [1, 2]], b = [1, 1], from θ0 = 0; one step of max_iter 3
    (lr 1, no line search), which torch ends after two iterations because its evaluations run out
    (max_eval = ⌊1.25 · 3⌋ = 3: one at θ0, one after each iteration). The first iteration scales −g
    by min(1, 1/‖g‖₁); the second is −H g by the two-loop recursion with one (s, y) pair,
    H_0 = sᵀy / yᵀy."""
    theta = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 1.0], dtype=torch.float64)
    optimizer = build("lbfgs.py", [theta], lr=1.0, max_iter=3)
    calls = []

    def closure():
        optimizer.zero_grad()
        loss = 0.5 * theta @ A @ theta - b @ theta
        loss.backward()
        calls.append(theta.detach().clone())
        return loss

    optimizer.step(closure)

    def grad(x):
        return [3 * x[0] + x[1] - 1, x[0] + 2 * x[1] - 1]

    x0 = [0.0, 0.0]
    g0 = grad(x0)  # [-1, -1]
    t = min(1.0, 1.0 / (abs(g0[0]) + abs(g0[1])))
    x1 = [x0[i] - t * g0[i] for i in range(2)]
    g1 = grad(x1)
    s = [x1[i] - x0[i] for i in range(2)]
    y = [g1[i] - g0[i] for i in range(2)]
    ys, yy = s[0] * y[0] + s[1] * y[1], y[0] ** 2 + y[1] ** 2
    rho = 1 / ys
    alpha = rho * (s[0] * g1[0] + s[1] * g1[1])
    q = [g1[i] - alpha * y[i] for i in range(2)]
    r = [ys / yy * qi for qi in q]
    beta = rho * (y[0] * r[0] + y[1] * r[1])
    r = [r[i] + s[i] * (alpha - beta) for i in range(2)]
    x2 = [x1[i] - r[i] for i in range(2)]
    assert close(theta, x2, 1e-12)
    assert len(calls) == 3  # each closure call at the point L-BFGS had set
    assert close(calls[0], x0) and close(calls[1], x1, 1e-12) and close(calls[2], x2, 1e-12)


def test_lbfgs_refuses_an_unknown_line_search_as_bad_hyperparameters():
    with pytest.raises(ChildError) as caught:
        build("lbfgs.py", [parameter(1.0)], line_search_fn="backtracking")
    assert caught.value.kind == BAD_HPARAMS


# --------------------------------------------------------------------------------------------
# The manifest: where each seed method is seeded.
# --------------------------------------------------------------------------------------------
SEED_METHODS = {"tract_sgd.py", "tract_adam.py", "adadagrad.py", "adadagradnorm.py", "clip_sgd.py", "clip_adam.py",
                "lbfgs.py", "el2n_diet.py", "grand_diet.py"}
HOOKS = ("first_layer_stats", "next_batch_size", "gradient_variance", "el2n_scores", "grand_scores")


def test_every_seed_method_is_in_the_manifest_on_the_boards_where_it_applies():
    by_file = {entry["file"]: entry for entry in MANIFEST}
    assert SEED_METHODS <= set(by_file)
    for file in SEED_METHODS:
        entry = by_file[file]
        assert entry["family"] == "seed method" and entry["notes"]
        boards = set(entry["hparams_by_benchmark"])
        module = optimizer_loader.exec_module(
            optimizer_loader.compile_source((BASELINES / file).read_text(), file), file)
        source = (BASELINES / file).read_text()
        uses_hooks = any(f"wants_{hook} = True" in source for hook in HOOKS)
        if uses_hooks:  # the runner's loop on the CPU offers hooks: never the synthetic or GPU boards
            assert boards == {"opt-digits"}, file
        assert "opt-synthetic" not in boards or file == "lbfgs.py"
        for board, hparams in entry["hparams_by_benchmark"].items():
            optimizer_loader.check_hparams_fit(module.make_optimizer, [], hparams, f"{file} on {board}")
    assert set(by_file["lbfgs.py"]["hparams_by_benchmark"]) == {"opt-synthetic", "opt-digits"}
    assert {"opt-text-transformer", "opt-cifar10-resnet18"} <= set(by_file["clip_sgd.py"]["hparams_by_benchmark"])
    assert by_file["clip_sgd.py"]["hparams_by_benchmark"]["opt-text-transformer"] == {"lr": 10, "momentum": 0.9,
                                                                                      "c": 0.1}


# --------------------------------------------------------------------------------------------
# The grand_scores hook's statistic (runner/tracks/training/variance.py).
# --------------------------------------------------------------------------------------------
def autograd_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[b] float64: each example's gradient norm over every parameter, by plain autograd one at a time."""
    norms = []
    for i in range(len(y)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        norms.append(math.sqrt(sum(float(p.grad.double().square().sum()) for p in model.parameters())))
    return torch.tensor(norms, dtype=torch.float64)


def test_gradient_norms_are_each_examples_autograd_gradient_norm_over_all_parameters():
    from runner.tracks.training.variance import gradient_norms

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 1, 0, 1])
    norms = gradient_norms(model, x, y)
    by_hand = autograd_norms(model, x, y)
    assert norms.shape == (5,) and norms.dtype == torch.float32
    assert torch.allclose(norms.double(), by_hand, rtol=1e-5) and len(set(norms.tolist())) == 5
    chunked = gradient_norms(model, x, y, chunk_bytes=2 * 4 * 23)  # 23 parameters: chunks of 2, 2 and 1
    assert torch.equal(chunked, norms)


def batchnorm_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(2 * 2 * 2, 3))


def held_at(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """A copy in eval mode whose BatchNorm has x's batch mean and biased variance as running statistics."""
    import copy

    fixed = copy.deepcopy(model)
    with torch.no_grad():
        h = fixed[0](x)
        fixed[1].running_mean.copy_(h.mean((0, 2, 3)))
        fixed[1].running_var.copy_(h.var((0, 2, 3), unbiased=False))
    return fixed.eval()


def test_gradient_norms_hold_batchnorm_at_the_scored_batchs_statistics():
    from runner.tracks.training.variance import gradient_norms

    model = batchnorm_model()
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 1])
    running = [b.clone() for b in model.buffers()]
    norms = gradient_norms(model, x, y)
    assert all(torch.equal(a, b) for a, b in zip(running, model.buffers(), strict=True)) and model.training
    assert torch.allclose(norms.double(), autograd_norms(held_at(model, x), x, y), rtol=1e-5)


def test_grand_scores_come_in_batches_each_at_its_own_statistics_the_short_last_one_joined():
    from runner.tracks.training.variance import gradient_norms_by_batch

    model = batchnorm_model()
    x, y = torch.randn(5, 1, 4, 4), torch.tensor([0, 1, 2, 1, 0])
    asked = []

    def images(index):
        asked.append(index.tolist())
        return x[index]

    scores = gradient_norms_by_batch(model, images, y, 2)
    assert asked == [[0, 1], [2, 3, 4]]  # batches of 2; the last single example joins the one before
    first, rest = autograd_norms(held_at(model, x[:2]), x[:2], y[:2]), autograd_norms(held_at(model, x[2:]), x[2:], y[2:])
    assert torch.allclose(scores.double(), torch.cat([first, rest]), rtol=1e-5)


def test_the_selection_of_a_grand_scores_optimizer_restricts_the_examples_drawn():
    from types import SimpleNamespace

    from runner.tracks.training.loop import RunnerHarness

    harness = RunnerHarness.__new__(RunnerHarness)
    harness.data = SimpleNamespace(size=10)
    harness.config = SimpleNamespace(augment="none")
    harness.device = torch.device("cpu")
    selection = torch.zeros(10)
    selection[[2, 3, 9]] = 1.0
    server = SimpleNamespace(hooks={"grand_scores"}, shared=SimpleNamespace(extras={"selection": selection}))
    assert sorted(harness._draw(torch.Generator().manual_seed(0), server, "epoch 1")[0].tolist()) == [2, 3, 9]


# --------------------------------------------------------------------------------------------
# On the runner's loop: the hook-based seed methods train the digits CNN (a tiny budget).
# --------------------------------------------------------------------------------------------
def train_digits(file: Path, work_dir: Path, hparams: dict, epochs: int) -> dict:
    from runner.evaluate import local_job_spec
    from runner.spec import validate_result
    from runner.tracks.train import evaluate_training

    spec = local_job_spec("opt-digits", file, hparams)
    spec.task.params.update(epochs=epochs, seeds=1)
    work_dir.mkdir(parents=True)
    result = evaluate_training(spec, file, work_dir=work_dir, data_root="/nonexistent", trust=False, device="cpu",
                               progress=lambda fraction, message: None)
    return validate_result(result, "opt-digits")


def steps_at(runs: list[list[int]]) -> list[int]:
    return [size for size, count in runs for _ in range(count)]


@pytest.mark.usefixtures("bwrap")
def test_the_hook_based_seed_methods_train_the_digits_cnn_with_their_board_settings(tmp_path):
    """TrAct (first_layer_stats, fixed loop), AdAdaGradNorm (gradient_variance + next_batch_size)
    and the GraNd diet (grand_scores) with baselines.json's opt-digits settings, 3 epochs each."""
    by_file = {entry["file"]: entry["hparams_by_benchmark"]["opt-digits"] for entry in MANIFEST
               if "opt-digits" in entry["hparams_by_benchmark"]}
    results = {file: train_digits(BASELINES / file, tmp_path / file, by_file[file], epochs=3)
               for file in ("tract_sgd.py", "adadagradnorm.py", "grand_diet.py")}
    for file, result in results.items():
        assert result["metrics"]["test_top1_mean"] > 50, file  # chance is 10
        assert result["env"]["loop"] == "runner" and result["env"]["sandbox"] == "bwrap"
    assert "samples" not in results["tract_sgd.py"]["env"]  # TrAct keeps the fixed loop
    # the result says which of the runner's hooks each method used
    assert {file: result["env"]["hooks"] for file, result in results.items()} == {
        "tract_sgd.py": ["first_layer_stats"], "adadagradnorm.py": ["gradient_variance", "next_batch_size"],
        "grand_diet.py": ["grand_scores"]}
    grown = results["adadagradnorm.py"]["env"]["samples"][0]
    sizes = steps_at(grown["batch_sizes"])
    assert sizes[0] == 64 and max(sizes) == 1024 and grown["variance_s"] > 0  # η 0.1 asks for the cap at once
    diet = results["grand_diet.py"]["env"]["samples"][0]
    assert diet["scored"] == 1347 and diet["samples"] == 3 * 1347  # one scoring, n_train samples of the budget


SPIES_ON_GRAND = b'''import torch


class Spy(torch.optim.SGD):
    wants_grand_scores = True
    count = 0

    def step(self, closure=None):
        Spy.count += 1
        if Spy.count == 1:
            self.request_scores = True
            return None
        s = self.grand_scores
        raise RuntimeError(f"SCORES {tuple(s.shape)} {s.dtype} min {float(s.min()):.6g} "
                           f"distinct {len(set(s.tolist()))} selection {float(self.selection.sum()):.0f}")


def make_optimizer(params, lr=0.01):
    return Spy(params, lr=lr)
'''


@pytest.mark.usefixtures("bwrap")
def test_grand_scores_reach_the_optimizer_in_shared_memory_after_the_step_that_asked(tmp_path, write_submission):
    from runner.spec import EvaluationError

    with pytest.raises(EvaluationError) as caught:
        train_digits(write_submission(SPIES_ON_GRAND), tmp_path / "grand-spy", {}, epochs=2)
    message = caught.value.message
    assert "SCORES (1347,) torch.float32" in message and "selection 1347" in message
    assert float(message.split("min ")[1].split()[0]) > 0  # every example has a gradient at initialization
    assert int(message.split("distinct ")[1].split()[0]) > 1300


@pytest.mark.usefixtures("bwrap")
def test_the_documented_grand_example_scores_at_initialization_and_trains(tmp_path):
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "grand_prune.py"
    result = train_digits(example, tmp_path / "grand", {}, epochs=2)
    counted = result["env"]["samples"][0]
    assert counted["scored"] == 1347 and counted["samples"] == 2 * 1347
    assert steps_at(counted["batch_sizes"])[0] == 64  # the first batch only asks for the scores
    assert result["metrics"]["test_top1_mean"] > 30  # chance is 10


def test_the_sandboxed_training_program_refuses_a_grand_scores_optimizer_in_one_line():
    from types import SimpleNamespace

    wants = type("Wants", (torch.optim.SGD,), {"wants_grand_scores": True})
    module = SimpleNamespace(make_optimizer=lambda params: wants(params, lr=0.1))
    with pytest.raises(ChildError) as caught:
        optimizer_loader.make_user_optimizer(module, [torch.nn.Parameter(torch.zeros(2))], {}, "submission.py")
    assert "\n" not in caught.value.message
    assert "Wants wants grand_scores, which only the runner's loop provides" in caught.value.message
