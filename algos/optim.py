"""Adam on foreach ops, with its learning rate and step count on the device.

Same update as ``torch.optim.Adam`` (no amsgrad, no weight decay). Keeping the step count
and lr as device tensors lets a schedule change lr without a host sync and lets the step
be captured in a CUDA graph. It also keeps training free of ``torch.optim``, whose
import pulls in torch's compiler stack: about 6 s at launch on a machine where Python
does not cache bytecode (measured on the H100 machine).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class Adam:
    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: torch.Tensor,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        # 0-dim tensor on the params' device, schedules write it in place; or [K], one lr per
        # member of stacked parameters [K, ...] (algos.ppo_members).
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = torch.zeros((), device=lr.device)  # Adam steps taken

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor | None] | None = None) -> None:
        """One step from the params' ``.grad`` or from ``grads`` (one per param)."""
        if grads is None:
            grads = [p.grad for p in self.params]
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads, strict=True)
        ]
        self.steps += 1.0
        torch._foreach_lerp_(self.exp_avg, grads, 1.0 - self.beta1)
        torch._foreach_mul_(self.exp_avg_sq, self.beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1.0 - self.beta2)
        step_size = self.lr / (1.0 - self.beta1**self.steps)
        bias2_sqrt = torch.sqrt(1.0 - self.beta2**self.steps)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_div(self.exp_avg, denom)
        if step_size.dim():
            torch._foreach_mul_(update, [step_size.view(-1, *[1] * (u.dim() - 1)) for u in update])
        else:
            torch._foreach_mul_(update, step_size)
        torch._foreach_sub_(self.params, update)

    def state_dict(self) -> dict[str, Any]:
        return {
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
            "steps": self.steps.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copies in place (a captured CUDA graph keeps pointing at the same tensors)."""
        if set(state) != {"exp_avg", "exp_avg_sq", "steps"}:
            raise ValueError(
                f"optimizer state has keys {sorted(state)}; it was saved by an older vecbench "
                "(torch.optim.Adam); train that run again"
            )
        for dst, src in zip(
            self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"], strict=True
        ):
            dst.copy_(src)
        self.steps.copy_(state["steps"])
