"""The latent ODE solve: exact answers under the per-series change of time, adjoint vs direct gradients."""

import numpy as np
import pytest
import torch
from torch import nn

from latentode.decoder import LatentDynamics, SolverError, decode_latent


class Linear(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, z):
        return z @ self.a.T


def linear_field(a):
    dyn = LatentDynamics(a.shape[0], 4, 2)
    dyn.net = Linear(a)
    return dyn


def random_queries(gen, batch, q, dtype):
    # sorted, per-series different, some before the origin (negative), padded by repeats
    tq = torch.sort(torch.rand(batch, q, generator=gen, dtype=dtype) * 3 - 0.5, dim=1).values
    tq[0, -2:] = tq[0, -3]  # padding of a shorter series
    return tq


# rk4 takes steps of at most step_size=0.1 (intervals are up to 3 time units long here): its tolerance is its
# truncation error; a wrong rate on any interval would give errors of order 1.
@pytest.mark.parametrize("method, tol", [("dopri5", 1e-6), ("rk4", 1e-5), ("bosh3", 1e-5)])
def test_time_change_matches_matrix_exponential(method, tol):
    gen = torch.Generator().manual_seed(0)
    dtype = torch.float64
    a = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=dtype)
    func = linear_field(a)
    z0 = torch.randn(2, 3, 2, generator=gen, dtype=dtype)  # (samples, batch, latent)
    tq = random_queries(gen, 3, 12, dtype)
    z = decode_latent(func, z0, tq, method=method, rtol=1e-9, atol=1e-10, adjoint=False)
    assert z.shape == (2, 3, 12, 2)
    expm = torch.linalg.matrix_exp(tq[..., None, None] * a)  # (batch, Q, 2, 2)
    expect = torch.einsum("bqij,sbj->sbqi", expm, z0)
    torch.testing.assert_close(z, expect, rtol=0, atol=tol)


def test_adjoint_and_direct_gradients_agree():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    dyn = LatentDynamics(3, 8, 3).double()
    func = dyn
    z0 = torch.randn(1, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    tq = random_queries(gen, 4, 7, torch.float64)
    grads = []
    for adjoint in (False, True):
        z0.grad = None
        dyn.zero_grad()
        out = decode_latent(func, z0, tq, rtol=1e-10, atol=1e-10, adjoint=adjoint)
        (out.sin().sum()).backward()
        grads.append([z0.grad.clone()] + [p.grad.clone() for p in dyn.parameters()])
    for g_direct, g_adjoint in zip(*grads):
        torch.testing.assert_close(g_adjoint, g_direct, rtol=1e-6, atol=1e-8)


def test_output_intervals_are_per_series_not_union():
    # 50 series with 70 distinct times each: the shared grid has 70 intervals, not ~3,500
    gen = torch.Generator().manual_seed(2)
    tq = torch.sort(torch.rand(50, 70, generator=gen), dim=1).values
    dyn = LatentDynamics(4, 8, 2)
    func = dyn
    z = decode_latent(func, torch.zeros(1, 50, 4), tq, method="rk4", adjoint=False, step_size=1.0)
    assert z.shape == (1, 50, 70, 4)
    assert dyn.nfe == 4 * 70  # one RK4 step per output interval (all shorter than step_size)


def test_step_cap_raises_solver_error():
    a = torch.tensor([[-1e4, 0.0], [0.0, -1.0]])
    func = linear_field(a)
    with pytest.raises(SolverError, match="max_num_steps=3"):
        decode_latent(func, torch.ones(1, 1, 2), torch.tensor([[10.0]]), rtol=1e-8, atol=1e-9,
                      adjoint=False, max_num_steps=3)


def test_zero_length_padding_leaves_state_unchanged():
    dyn = LatentDynamics(2, 8, 2)
    func = dyn
    z0 = torch.randn(1, 2, 2)
    tq = torch.tensor([[0.3, 0.3, 0.3], [0.0, 0.0, 0.0]])
    z = decode_latent(func, z0, tq, adjoint=False)
    torch.testing.assert_close(z[0, 0, 0], z[0, 0, 2])
    torch.testing.assert_close(z[0, 1], z0[0, 1].expand(3, 2))
    np.testing.assert_array_equal(z.shape, (1, 2, 3, 2))


ROTATION = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=torch.float64)


def exact(a, z0, tq):
    """z(t) = expm(t a) z0 for z0 (samples, batch, d) and tq (batch, Q) -> (samples, batch, Q, d)."""
    return torch.einsum("bqij,sbj->sbqi", torch.linalg.matrix_exp(tq[..., None, None] * a), z0)


def test_methods_are_one_list_without_the_adams_methods():
    from latentode import decoder, priors

    assert decoder.METHODS is priors.METHODS
    assert "explicit_adams" not in decoder.METHODS and "implicit_adams" not in decoder.METHODS
    with pytest.raises(ValueError, match="explicit_adams.*not one of.*dopri5"):
        decode_latent(LatentDynamics(2, 4, 2), torch.zeros(1, 1, 2), torch.ones(1, 1), method="explicit_adams")
    with pytest.raises(ValueError, match="rk4"):
        priors.CNFPrior(2, method="implicit_adams")


def test_rk4_value_does_not_depend_on_the_other_queries():
    func = linear_field(ROTATION)
    z0 = torch.tensor([[[1.0, 0.5]]], dtype=torch.float64)
    alone = decode_latent(func, z0, torch.tensor([[2.0]], dtype=torch.float64), method="rk4", adjoint=False)
    many = decode_latent(func, z0, torch.tensor([[0.1, 0.2, 2.0]], dtype=torch.float64), method="rk4",
                         adjoint=False)
    # one step per output interval gave differences of 0.1 here
    torch.testing.assert_close(alone[:, :, 0], many[:, :, 2], rtol=0, atol=1e-5)
    truth = exact(ROTATION, z0, torch.tensor([[2.0]], dtype=torch.float64))
    torch.testing.assert_close(alone, truth, rtol=0, atol=1e-5)


def test_queries_on_both_sides_are_solved_outward_from_z0():
    # an expanding field: integrating back to t=-6 and forth again to t=+1 amplifies the error e^7-fold
    a = torch.tensor([[1.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    func = linear_field(a)
    z0 = torch.tensor([[[1.0, -1.0], [0.3, 0.2]]], dtype=torch.float64)
    tq = torch.tensor([[-6.0, -1.0, 1.0, 2.0], [-0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    with torch.no_grad():
        z = decode_latent(func, z0, tq, method="dopri5", rtol=1e-4, atol=1e-8, adjoint=False)
        fwd = decode_latent(func, z0[:, :1], tq[:1, 2:], method="dopri5", rtol=1e-4, atol=1e-8, adjoint=False)
    err = (z - exact(a, z0, tq)).abs() / exact(a, z0, tq).abs()
    assert float(err[:, 0, 2:].max()) < 5e-5   # 6e-6 outward; 7e-4 through t=-6 and back
    # the values after z0 are what a forward-only solve gives, to the tolerance
    torch.testing.assert_close(z[:, :1, 2:], fwd, rtol=5e-5, atol=0)


def test_idle_batch_mates_do_not_loosen_the_tolerance():
    func = linear_field(ROTATION)
    z0 = torch.tensor([[[1.0, 0.5]]], dtype=torch.float64)
    tq = torch.tensor([[1.0, 4.0, 9.0]], dtype=torch.float64)
    alone = decode_latent(func, z0, tq, rtol=1e-3, atol=1e-4, adjoint=False)
    z0_mates = torch.cat([z0, torch.zeros(1, 15, 2, dtype=torch.float64)], dim=1)
    tq_mates = torch.cat([tq, torch.zeros(15, 3, dtype=torch.float64)])   # padded series: nothing to solve
    mates = decode_latent(func, z0_mates, tq_mates, rtol=1e-3, atol=1e-4, adjoint=False)
    torch.testing.assert_close(mates[:, :1], alone, rtol=0, atol=1e-12)


def test_two_decodes_before_one_backward_give_the_separate_gradients():
    torch.manual_seed(3)
    dyn = LatentDynamics(3, 8, 2).double()
    z0 = torch.randn(1, 2, 3, dtype=torch.float64)
    tq1 = torch.tensor([[0.5, 1.0], [0.2, 0.3]], dtype=torch.float64)
    tq2 = torch.tensor([[2.0, 3.0], [1.5, 1.7]], dtype=torch.float64)
    kw = dict(rtol=1e-9, atol=1e-10, adjoint=True)

    def grads(loss):
        dyn.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in dyn.parameters()]

    g1 = grads(decode_latent(dyn, z0, tq1, **kw).sin().sum())
    g2 = grads(decode_latent(dyn, z0, tq2, **kw).cos().sum())
    both = grads(decode_latent(dyn, z0, tq1, **kw).sin().sum() + decode_latent(dyn, z0, tq2, **kw).cos().sum())
    for a, b, c in zip(g1, g2, both):
        torch.testing.assert_close(c, a + b, rtol=1e-6, atol=1e-8)


def test_adjoint_backward_solve_runs_and_counts_evaluations():
    dyn = LatentDynamics(2, 8, 2)
    z0 = torch.randn(1, 3, 2, requires_grad=True)
    out = decode_latent(dyn, z0, torch.tensor([[0.5, 1.0]] * 3), adjoint=True)
    forward = dyn.nfe
    out.sum().backward()
    assert dyn.nfe > forward and z0.grad is not None   # the backward pass solved the adjoint ODE


class Gained(Linear):
    """z a^T times a plain-float gain, which a test may change between forward and backward."""

    gain = 1.0

    def forward(self, z):
        return super().forward(z) * self.gain


def test_step_cap_raises_solver_error_in_the_adjoint_backward_solve():
    dyn = LatentDynamics(2, 4, 2)
    dyn.net = Gained(torch.tensor([[-1.0, 0.0], [0.0, -0.5]]))
    z0 = torch.ones(1, 1, 2, requires_grad=True)
    out = decode_latent(dyn, z0, torch.tensor([[1.0]]), rtol=1e-6, atol=1e-7, adjoint=True, max_num_steps=30)
    dyn.net.gain = 1e4   # stiff by the time backward runs
    with pytest.raises(SolverError, match="max_num_steps=30"):
        out.sum().backward()
    # the forward solve's count does not spill into the backward solve: each takes 32 evaluations here,
    # under the cap of 5 dopri5 steps (5 * 7 + 2 evaluations), together they would not be
    dyn.net.gain = 1.0
    out = decode_latent(dyn, z0, torch.tensor([[1.0]]), rtol=1e-6, atol=1e-7, adjoint=True, max_num_steps=5)
    out.sum().backward()


_UNDER_O = """
import torch, pytest
from torch import nn
from latentode.decoder import LatentDynamics, SolverError, decode_latent
assert not __debug__
dyn = LatentDynamics(2, 4, 2)
class L(nn.Module):
    gain = 1.0
    def __init__(s, a):
        super().__init__(); s.a = nn.Parameter(a)
    def forward(s, z):
        return z @ s.a.T * s.gain
dyn.net = L(torch.tensor([[-1e4, 0.0], [0.0, -1.0]]))
with pytest.raises(SolverError):
    decode_latent(dyn, torch.ones(1, 1, 2), torch.tensor([[10.0]]), rtol=1e-8, atol=1e-9, adjoint=False,
                  max_num_steps=3)
dyn.net = L(torch.tensor([[-1.0, 0.0], [0.0, -0.5]]))
out = decode_latent(dyn, torch.ones(1, 1, 2, requires_grad=True), torch.tensor([[1.0]]), rtol=1e-6, atol=1e-7,
                    max_num_steps=30)
dyn.net.gain = 1e4
with pytest.raises(SolverError):
    out.sum().backward()
print("OK")
"""


def test_step_cap_holds_under_python_O():
    import subprocess
    import sys
    from pathlib import Path

    res = subprocess.run([sys.executable, "-O", "-c", _UNDER_O], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1], env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-2000:]
