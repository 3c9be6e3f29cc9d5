"""Encoders: masked values are invisible, padding changes nothing, z0 sits at the origin."""

import pytest
import torch

from latentode.encoders import ENCODERS, SIGMA_MIN


def batch(gen, b=3, t=6, d=4):
    times = torch.sort(torch.rand(b, t, generator=gen), dim=1).values
    x = torch.randn(b, t, d, generator=gen)
    m = (torch.rand(b, t, d, generator=gen) > 0.4).float()
    return times, x * m, m


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_masked_values_do_not_change_the_output(name):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    enc = ENCODERS[name](4, 3, hidden_dim=8, width=16, n_layers=2)
    t, x, m = batch(gen)
    mu, sigma = enc(t, x, m)
    x2 = x + 100.0 * (1 - m) * torch.randn(x.shape, generator=gen)
    mu2, sigma2 = enc(t, x2, m)
    torch.testing.assert_close(mu, mu2)
    torch.testing.assert_close(sigma, sigma2)
    assert mu.shape == (3, 3) and (sigma >= SIGMA_MIN).all()
    # an observed value does matter
    x3 = x + m * 1.0
    assert not torch.allclose(enc(t, x3, m)[0], mu)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_padding_to_a_longer_series_changes_nothing(name):
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    enc = ENCODERS[name](4, 3, hidden_dim=8, width=16, n_layers=2)
    t, x, m = batch(gen, b=1, t=5)
    alone = enc(t, x, m)[0]
    pad = 4  # repeat the last time, mask 0
    t_p = torch.cat([t, t[:, -1:].expand(1, pad)], 1)
    x_p = torch.cat([x, torch.zeros(1, pad, 4)], 1)
    m_p = torch.cat([m, torch.zeros(1, pad, 4)], 1)
    torch.testing.assert_close(enc(t_p, x_p, m_p)[0], alone, rtol=1e-5, atol=1e-6)


def test_odernn_reaches_back_to_the_origin():
    # the same observations shifted later in the window give a different z0 (the ODE runs over the gap)
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    enc = ENCODERS["odernn"](4, 3, hidden_dim=8, width=16, n_layers=2)
    t, x, m = batch(gen, b=1)
    assert not torch.allclose(enc(t + 0.5, x, m)[0], enc(t, x, m)[0])
    assert enc.nfe > 0
