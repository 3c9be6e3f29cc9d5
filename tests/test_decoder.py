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


# rk4 takes one step per output interval (up to 3 time units long here): its tolerance is its truncation error;
# a wrong rate on any interval would give errors of order 1.
@pytest.mark.parametrize("method, tol", [("dopri5", 1e-6), ("rk4", 1e-2), ("bosh3", 1e-5)])
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
