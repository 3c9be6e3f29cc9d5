"""Tests for latentode.priors: closed-form flows, estimator statistics, a trained 2-D prior, adjoint gradients."""

import doctest
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from latentode import priors
from latentode.priors import (AUTO_EXACT_MAX_DIM, PRIORS, CNFPrior, NormalPrior, TimeConditionedMLP,
                              divergence_exact, divergence_hutchinson, make_prior, measure_trace_cost)


class LinearField(nn.Module):
    """g(t, z) = A z, so z(T) = expm(A T) z(0) and log p(z) = log N(expm(-A T) z) - T tr(A)."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, z):
        return z @ self.A.T


def linear_prior(A, trace, **kwargs):
    prior = CNFPrior(A.shape[0], hidden_dim=4, trace=trace, rtol=1e-10, atol=1e-10, **kwargs).double()
    prior.field = LinearField(A)
    return prior


def random_field(d, hidden_dim=16, seed=0, std=0.4):
    """A generic nonlinear field (the default one starts at zero)."""
    torch.manual_seed(seed)
    field = TimeConditionedMLP(d, hidden_dim, 2).double()
    with torch.no_grad():
        for p in field.parameters():
            p.normal_(0.0, std)
    return field


# ------------------------------------------------------------------------------------------------------------
# A flow with a closed form
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_linear_flow_log_prob_matches_closed_form(trace):
    torch.manual_seed(0)
    d, T = 3, 0.7
    A = 0.6 * torch.randn(d, d, dtype=torch.float64)
    if trace == "hutchinson":   # eps^T A eps = tr(A) for Rademacher eps only when A is diagonal
        A = torch.diag(torch.diag(A))
    prior = linear_prior(A, trace, T=T)
    z = torch.randn(4, 5, d, dtype=torch.float64)   # (n_samples, batch, latent_dim)
    z0 = z @ torch.linalg.matrix_exp(-A * T).T
    expected = torch.distributions.MultivariateNormal(torch.zeros(d, dtype=torch.float64),
                                                      torch.eye(d, dtype=torch.float64)).log_prob(z0) - T * torch.trace(A)
    log_p = prior.log_prob(z)
    assert log_p.shape == (4, 5)
    torch.testing.assert_close(log_p, expected, rtol=0, atol=1e-4)


def test_linear_flow_hutchinson_mean_for_non_diagonal_field():
    torch.manual_seed(1)
    d, T, n = 3, 0.5, 4000
    A = 0.6 * torch.randn(d, d, dtype=torch.float64)
    prior = linear_prior(A, "hutchinson", T=T)
    prior.rtol = prior.atol = 1e-7
    z = torch.randn(1, d, dtype=torch.float64).expand(n, d)   # one point, n independent noise draws
    estimates = prior.log_prob(z).detach()
    z0 = z[0] @ torch.linalg.matrix_exp(-A * T).T
    exact = -0.5 * (z0 @ z0 + d * math.log(2 * math.pi)) - T * torch.trace(A)
    assert abs(estimates.mean() - exact) < 4 * estimates.std() / math.sqrt(n)


def test_linear_flow_sample_maps_base_through_expm():
    torch.manual_seed(2)
    d, T = 3, 0.8
    A = 0.6 * torch.randn(d, d, dtype=torch.float64)
    prior = linear_prior(A, "exact", T=T)
    samples = prior.sample(6, torch.Generator().manual_seed(5))
    base = torch.randn((6, d), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(samples, base @ torch.linalg.matrix_exp(A * T).T, rtol=0, atol=1e-7)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_linear_flow_regularization_closed_form(trace):
    # Diagonal A = diag(a): z_i(t) = exp(a_i t) z0_i, so int_0^T ||A z||^2 dt = sum_i a_i z0_i^2 (e^{2 a_i T} - 1) / 2
    # and ||eps^T A||^2 = sum_i a_i^2 exactly for Rademacher eps.
    torch.manual_seed(3)
    d, T, wk, wj = 3, 0.6, 0.3, 0.05
    a = torch.tensor([0.5, -0.7, 0.2], dtype=torch.float64)
    prior = linear_prior(torch.diag(a), trace, T=T, kinetic_weight=wk, jacobian_weight=wj)
    z = torch.randn(7, d, dtype=torch.float64)
    log_p, reg = prior.log_prob(z, return_regularization=True)
    z0 = z * torch.exp(-a * T)
    kinetic = (a * z0.pow(2) * (torch.exp(2 * a * T) - 1) / 2).sum(-1).mean()
    frobenius = T * a.pow(2).sum()
    torch.testing.assert_close(reg, wk * kinetic + wj * frobenius, rtol=1e-6, atol=0)
    torch.testing.assert_close(log_p, prior.log_prob(z), rtol=0, atol=1e-7)
    assert prior.log_prob(z, return_regularization=False).shape == (7,)


def test_regularization_is_zero_without_weights():
    prior = CNFPrior(2, hidden_dim=8)
    log_p, reg = prior.log_prob(torch.randn(3, 2), return_regularization=True)
    assert reg.shape == () and float(reg) == 0.0 and log_p.shape == (3,)


# ------------------------------------------------------------------------------------------------------------
# Divergence estimators
# ------------------------------------------------------------------------------------------------------------
def test_divergence_exact_matches_jacobian_trace():
    field, t = random_field(4), torch.tensor(0.3, dtype=torch.float64)
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    div = divergence_exact(field(t, z), z)
    jac = torch.func.vmap(torch.func.jacrev(lambda x: field(t, x[None])[0]))(z.detach())
    torch.testing.assert_close(div, torch.diagonal(jac, dim1=-2, dim2=-1).sum(-1))


def test_hutchinson_is_unbiased():
    d, batch, n = 5, 4, 4000
    field, t = random_field(d, seed=4), torch.tensor(0.5, dtype=torch.float64)
    torch.manual_seed(4)
    z = torch.randn(batch, d, dtype=torch.float64)
    zz = z.repeat(n, 1).requires_grad_(True)            # n copies of each point, one noise draw per copy
    noise = torch.randint(0, 2, zz.shape, dtype=torch.float64) * 2 - 1
    estimates = divergence_hutchinson(field(t, zz), zz, noise, create_graph=False).reshape(n, batch)
    zx = z.clone().requires_grad_(True)
    exact = divergence_exact(field(t, zx), zx, create_graph=False)
    stderr = estimates.std(0) / math.sqrt(n)
    assert (stderr > 0).all()
    assert ((estimates.mean(0) - exact).abs() < 4 * stderr).all()


def test_hutchinson_requires_noise():
    z = torch.randn(2, 2, requires_grad=True)
    with pytest.raises(ValueError, match="noise"):
        divergence_hutchinson(z * 2, z, None)


# ------------------------------------------------------------------------------------------------------------
# A trained 2-D prior
# ------------------------------------------------------------------------------------------------------------
def test_trained_2d_prior_is_normalised_and_samples_match_density():
    torch.manual_seed(0)
    centers = torch.tensor([[-1.5, 0.0], [1.5, 0.0]])
    data = centers[torch.randint(0, 2, (512,))] + 0.5 * torch.randn(512, 2)
    prior = CNFPrior(2, hidden_dim=32, n_layers=2, rtol=1e-3, atol=1e-3, adjoint=False)
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(200):
        loss = -prior.log_prob(data[torch.randint(0, 512, (128,))]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    prior = prior.double()
    prior.rtol = prior.atol = 1e-6
    grid = torch.linspace(-6, 6, 201, dtype=torch.float64)
    points = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        density = prior.log_prob(points).exp()
    assert abs(float(density.sum() * (grid[1] - grid[0]) ** 2) - 1.0) < 0.02
    fitted = prior.log_prob(data.double()).mean().detach()
    assert fitted > NormalPrior(2).double().log_prob(data.double()).mean() + 0.5   # it learned something
    with torch.no_grad():
        modes = prior.log_prob(torch.tensor([[-1.5, 0.0], [0.0, 0.0], [1.5, 0.0]], dtype=torch.float64))
    assert modes[1] < modes[0] and modes[1] < modes[2]                               # bimodal

    w = density / density.sum()
    mean = w @ points
    cov = (points - mean).T @ ((points - mean) * w[:, None])
    n = 20000
    with torch.no_grad():
        samples = prior.sample(n, torch.Generator().manual_seed(1))
    centred = samples - samples.mean(0)
    mean_se = samples.std(0) / math.sqrt(n)
    assert ((samples.mean(0) - mean).abs() < 4 * mean_se + 1e-3).all()
    products = centred[:, :, None] * centred[:, None, :]                            # (n, 2, 2)
    cov_se = products.std(0) / math.sqrt(n)
    assert ((products.mean(0) - cov).abs() < 4 * cov_se + 1e-3).all()


# ------------------------------------------------------------------------------------------------------------
# Gradients: adjoint against backpropagation through the solver
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_adjoint_gradients_match_direct(trace):
    d = 3
    grads = []
    for adjoint in (True, False):
        prior = CNFPrior(d, hidden_dim=12, trace=trace, rtol=1e-10, atol=1e-10, adjoint=adjoint,
                         kinetic_weight=0.1, jacobian_weight=0.1).double()
        prior.field = random_field(d, hidden_dim=12, seed=6, std=0.5)
        torch.manual_seed(7)
        z = torch.randn(5, d, dtype=torch.float64, requires_grad=True)
        torch.manual_seed(8)   # the same Hutchinson noise for both
        log_p, reg = prior.log_prob(z, return_regularization=True)
        (-log_p.mean() + reg).backward()
        grads.append([z.grad] + [p.grad for p in prior.parameters()])
    for adj, direct in zip(*grads):
        torch.testing.assert_close(adj, direct, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------------------------
# Interface: grad modes, dtypes, NFE, pickling, auto trace
# ------------------------------------------------------------------------------------------------------------
def test_untrained_cnf_is_standard_normal_in_float32():
    prior = CNFPrior(3, hidden_dim=8)
    z = torch.randn(2, 4, 3)
    log_p = prior.log_prob(z)
    assert log_p.dtype == torch.float32 and log_p.shape == (2, 4)
    torch.testing.assert_close(log_p, NormalPrior(3).log_prob(z))


def test_log_prob_under_no_grad_and_eval_is_detached():
    prior = CNFPrior(2, hidden_dim=8, trace="exact").double().eval()
    prior.field = random_field(2, hidden_dim=8)
    z = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        quiet = prior.log_prob(z)
    assert not quiet.requires_grad
    with torch.inference_mode():
        inferred = prior.log_prob(z.detach())
    assert not inferred.requires_grad
    loud = prior.log_prob(z)
    assert loud.requires_grad
    torch.testing.assert_close(quiet, loud.detach())
    torch.testing.assert_close(inferred, quiet)


def test_nfe_counts_forward_and_adjoint_evaluations():
    prior = CNFPrior(2, hidden_dim=8).double()
    prior.field = random_field(2, hidden_dim=8)
    assert prior.nfe == 0
    log_p = prior.log_prob(torch.randn(3, 2, dtype=torch.float64))
    forward = prior.nfe
    assert forward > 0
    log_p.sum().backward()
    assert prior.nfe > forward
    prior.reset_nfe()
    assert prior.nfe == 0
    prior.sample(3)
    assert prior.nfe > 0


def test_pickle_and_state_dict_round_trip():
    prior = CNFPrior(2, hidden_dim=8, trace="hutchinson", kinetic_weight=0.1)
    prior.field = random_field(2, hidden_dim=8).float()
    z = torch.randn(5, 2)
    prior.log_prob(z).sum().backward()
    clone = pickle.loads(pickle.dumps(prior))
    fresh = CNFPrior(2, hidden_dim=8, trace="exact")
    fresh.load_state_dict(prior.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone.sample(4, torch.Generator().manual_seed(0)),
                                   fresh.sample(4, torch.Generator().manual_seed(0)))
    assert pickle.loads(pickle.dumps(NormalPrior(3))).latent_dim == 3


def test_auto_trace_threshold():
    assert CNFPrior(AUTO_EXACT_MAX_DIM, hidden_dim=4).divergence == "exact"
    assert CNFPrior(AUTO_EXACT_MAX_DIM + 1, hidden_dim=4).divergence == "hutchinson"
    assert CNFPrior(2, hidden_dim=4, trace="hutchinson").divergence == "hutchinson"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    prior = CNFPrior(2, hidden_dim=8).cuda()
    z = torch.randn(4, 3, 2, device="cuda")
    assert prior.log_prob(z).device.type == "cuda"
    assert prior.sample(5, torch.Generator().manual_seed(0)).device.type == "cuda"
    assert NormalPrior(2).cuda().sample(5).device.type == "cuda"


def test_measure_trace_cost_runs():
    (row,) = measure_trace_cost(latent_dims=(2,), batch=4, hidden_dim=4, repeats=1, trials=1)
    assert set(row) == {"latent_dim", "field_ms", "exact", "hutchinson", "exact_vjp", "hutchinson_vjp"}


def test_docstring_examples():
    assert doctest.testmod(priors, extraglobs={"torch": torch}).failed == 0


# ------------------------------------------------------------------------------------------------------------
# NormalPrior against torch.distributions
# ------------------------------------------------------------------------------------------------------------
def test_normal_prior_matches_torch_distributions():
    torch.manual_seed(9)
    prior = NormalPrior(4).double()
    reference = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)), 1)
    z = torch.randn(3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z))
    log_p, reg = prior.log_prob(z, return_regularization=True)
    assert float(reg) == 0.0
    mu, sigma = torch.randn(5, 4, dtype=torch.float64), torch.rand(5, 4, dtype=torch.float64) + 0.1
    posterior = torch.distributions.Independent(torch.distributions.Normal(mu, sigma), 1)
    torch.testing.assert_close(prior.analytic_kl(mu, sigma), torch.distributions.kl_divergence(posterior, reference))
    samples = prior.sample(7, torch.Generator().manual_seed(3))
    expected = torch.randn((7, 4), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(samples, expected)
    assert prior.nfe == 0 and CNFPrior(2, hidden_dim=4).analytic_kl(mu[:, :2], sigma[:, :2]) is None


# ------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------
def test_make_prior_builds_and_lists_choices():
    assert isinstance(make_prior("normal", 3), NormalPrior)
    assert make_prior("cnf", np.int64(3), {"T": np.float64(0.5)}).latent_dim == 3   # numpy scalars are fine
    prior = make_prior("cnf", 3, {"hidden_dim": 8, "trace": "hutchinson"})
    assert isinstance(prior, CNFPrior) and prior.field.layers[0].linear.out_features == 8
    with pytest.raises(ValueError, match=r"'normal', 'cnf'"):
        make_prior("flow", 3)
    with pytest.raises(TypeError, match=r"hidden_size.*valid options: \['hidden_dim', 'n_layers'"):
        make_prior("cnf", 3, {"hidden_size": 8})
    with pytest.raises(TypeError, match="valid options: none"):
        make_prior("normal", 3, {"trace": "exact"})
    with pytest.raises(TypeError, match="options"):
        make_prior("cnf", 3, [("trace", "exact")])
    assert set(PRIORS) == {"normal", "cnf"}


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"latent_dim": 0}, ValueError, "latent_dim"),
    ({"latent_dim": 2.0}, TypeError, "latent_dim"),
    ({"trace": "approx"}, ValueError, r"trace.*'auto', 'exact', 'hutchinson'"),
    ({"method": "rk45"}, ValueError, r"method.*'dopri5'"),
    ({"T": 0.0}, ValueError, "`T`"),
    ({"T": float("inf")}, ValueError, "`T`"),
    ({"rtol": -1e-5}, ValueError, "rtol"),
    ({"atol": 0}, ValueError, "atol"),
    ({"adjoint": 1}, TypeError, "adjoint"),
    ({"kinetic_weight": -0.1}, ValueError, "kinetic_weight"),
    ({"jacobian_weight": "0.1"}, TypeError, "jacobian_weight"),
    ({"hidden_dim": 0}, ValueError, "hidden_dim"),
    ({"n_layers": -1}, ValueError, "n_layers"),
    ({"solver_options": 0.1}, TypeError, "solver_options"),
])
def test_cnf_prior_rejects_bad_options(kwargs, error, fragment):
    kwargs = {"latent_dim": 2, **kwargs}
    with pytest.raises(error, match=fragment):
        CNFPrior(**kwargs)


def test_log_prob_rejects_bad_inputs():
    prior = CNFPrior(3, hidden_dim=4)
    with pytest.raises(ValueError, match=r"latent_dim=3.*\(4, 2\)"):
        prior.log_prob(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="float64"):
        prior.log_prob(torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        prior.log_prob(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="latent_dim"):
        NormalPrior(3).log_prob(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="`n`"):
        NormalPrior(3).sample(2.5)
    with pytest.raises(ValueError, match="latent_dim"):
        NormalPrior(0)
