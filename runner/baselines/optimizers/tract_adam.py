"""TrAct with Adam (Petersen, Borgelt, Ermon, "TrAct: Making First-layer Pre-Activations
Trainable", NeurIPS 2024, arXiv 2410.23970; shared/PROTOCOLS.md, "TrAct").

The first layer computes z = W·x on every input patch. TrAct replaces only that weight's gradient:

    G = ∇_Zᵀ X (XᵀX / b + λ I_n)⁻¹ = G_plain (XᵀX / b + λ I_n)⁻¹

with X the b × n matrix of the batch's unfolded patches (b = batch × output positions, n =
C_in·k·k) and G_plain = ∇_Zᵀ X the ordinary weight gradient (out × n once the kernel is
flattened). Every other gradient is left as it is, and torch.optim.Adam steps with the result
(its moments see G, as in the paper's Adam runs). λ (``lam``, default 0.1, the paper's) is the
only hyperparameter TrAct adds; as λ → ∞, λ·G → G_plain.

The runner supplies XᵀX / b through the ``first_layer_stats`` hook (docs/submissions.md): the
class says ``wants_first_layer_stats = True`` and reads ``self.first_layer_stats`` (float32 n × n)
before every step. The first layer's weight is the first parameter the optimizer holds (the
training tasks' models list their first convolution first). The linear solve runs in float64.
"""
import torch


def tract_gradient(gradient, stats, lam):
    """G_plain (stats + λ I)⁻¹ for a weight gradient of any shape [out, ...] whose trailing
    dimensions flatten to n, with ``stats`` the n × n matrix XᵀX / b; same shape and dtype as
    ``gradient``. Raises ValueError when the flattened size is not n."""
    rows = gradient.reshape(gradient.shape[0], -1).double()
    n = stats.shape[0]
    if rows.shape[1] != n:
        raise ValueError(f"the first parameter's gradient flattens to {rows.shape[1]} columns per output, but "
                         f"first_layer_stats is {n} x {n}: the first parameter is not the first layer's weight")
    system = stats.double() + lam * torch.eye(n, dtype=torch.float64)
    # (G M⁻¹)ᵀ = M⁻ᵀ Gᵀ = M⁻¹ Gᵀ, M symmetric
    return torch.linalg.solve(system, rows.T).T.reshape(gradient.shape).to(gradient.dtype)


class TrActAdam(torch.optim.Adam):
    """torch.optim.Adam whose first parameter's gradient is TrAct's before each step."""

    wants_first_layer_stats = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, lam=0.1):
        if not lam > 0:
            raise ValueError(f"lam (TrAct's λ) must be positive, got {lam}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.lam = float(lam)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        stats = getattr(self, "first_layer_stats", None)
        if stats is None:
            raise RuntimeError("TrAct needs the first_layer_stats hook, which this task does not offer "
                               "(the training tasks on the CPU do)")
        weight = self.param_groups[0]["params"][0]
        if weight.grad is not None:
            weight.grad.copy_(tract_gradient(weight.grad, stats, self.lam))
        super().step()
        return loss


def make_optimizer(params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, lam=0.1):
    return TrActAdam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, lam=lam)
