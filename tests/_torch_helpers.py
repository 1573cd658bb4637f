"""Helpers shared by the crossent.torch tests (imported after ``pytest.importorskip("torch")``)."""

import torch

F = torch.nn.functional

TOL = {torch.float64: (1e-10, 1e-9), torch.float32: (2e-5, 2e-5), torch.bfloat16: (3e-2, 3e-2),
       torch.float16: (3e-3, 3e-3)}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_close(actual, expected, dtype=torch.float64, scale=1.0):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual, expected, atol=atol * scale, rtol=rtol, check_dtype=False)


def value_and_grad(fn, x, *args, upstream=None, **kwargs):
    """Loss and d(upstream . loss)/dx for a fresh leaf copy of x."""
    leaf = x.detach().clone().requires_grad_()
    loss = fn(leaf, *args, **kwargs)
    g = torch.ones_like(loss) if upstream is None else upstream
    (grad,) = torch.autograd.grad(loss, leaf, g)
    return loss.detach(), grad


def upstream_for(reduction, shape, seed=1):
    if reduction == "none":
        return torch.randn(shape, generator=gen(seed), dtype=torch.float64)
    return torch.tensor(-0.7, dtype=torch.float64)


def reference_z_loss_rows(x2d, target, weight, ignore_index, z_loss):
    """Our documented z-loss term: z * logsumexp(x_i)**2 on kept rows; the mean's denominator."""
    kept = target != ignore_index
    safe = torch.where(kept, target, 0)
    row_weight = kept.to(x2d.dtype) if weight is None else weight[safe] * kept
    return kept.to(x2d.dtype) * z_loss * torch.logsumexp(x2d, -1) ** 2, row_weight.sum()


def linear_value_and_grads(fn, hidden, weight, target, bias, upstream, **kwargs):
    leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight)]
    leaves.append(None if bias is None else bias.detach().clone().requires_grad_())
    loss = fn(leaves[0].reshape(-1, hidden.shape[-1]), leaves[1], target.flatten(), leaves[2], **kwargs)
    inputs = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(loss, inputs, upstream.flatten() if upstream.ndim else upstream)
    return loss.detach(), grads
