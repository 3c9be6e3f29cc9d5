"""Encoders: masked values are invisible, padding changes nothing, z0 sits at the origin or the last observation."""

import pytest
import torch

from latentode.encoders import ANCHORS, ENCODERS, SIGMA_MIN, last_observed_time
from latentode.decoder import decode_latent
from latentode.model import LatentODE, interpolate_observed, series_level


def batch(gen, b=3, t=6, d=4):
    times = torch.sort(torch.rand(b, t, generator=gen), dim=1).values
    x = torch.randn(b, t, d, generator=gen)
    m = (torch.rand(b, t, d, generator=gen) > 0.4).float()
    return times, x * m, m


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_masked_values_do_not_change_the_output(name, anchor):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    enc = ENCODERS[name](4, 3, hidden_dim=8, width=16, n_layers=2, anchor=anchor)
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


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_padding_to_a_longer_series_changes_nothing(name, anchor):
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    enc = ENCODERS[name](4, 3, hidden_dim=8, width=16, n_layers=2, anchor=anchor)
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


def test_last_observed_time():
    t = torch.tensor([[0.0, 0.5, 1.0, 2.0], [0.0, 0.2, 0.2, 0.2], [0.0, 1.0, 2.0, 3.0]])
    m = torch.zeros(3, 4, 2)
    m[0, [0, 2], 0] = 1  # last observed step at 1.0; the step at 2.0 is empty
    m[1, 1, 1] = 1
    assert last_observed_time(t, m).tolist() == pytest.approx([1.0, 0.2, 0.0])  # a series with nothing observed: 0


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_last_anchor_ignores_later_empty_steps_and_reads_forwards(name):
    """With anchor="last" later steps without observations (hidden for forecasting) change nothing,
    and the state ends on the last observation: changing it changes z0, as does changing the first."""
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    enc = ENCODERS[name](4, 3, hidden_dim=8, width=16, n_layers=2, anchor="last")
    t, x, m = batch(gen, b=2, t=5)
    m[:, -1] = 1.0
    x = x * m
    mu = enc(t, x, m)[0]
    later = t[:, -1:] + torch.tensor([[0.3, 0.9]])
    t2 = torch.cat([t, later], 1)
    x2 = torch.cat([x, torch.randn(2, 2, 4, generator=gen)], 1)
    m2 = torch.cat([m, torch.zeros(2, 2, 4)], 1)
    torch.testing.assert_close(enc(t2, x2, m2)[0], mu, rtol=1e-5, atol=1e-6)
    for j in (0, -1):
        x3 = x.clone()
        x3[:, j] += m[:, j]
        assert not torch.allclose(enc(t, x3, m)[0], mu)


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_trailing_empty_steps_change_nothing(name, anchor):
    """Steps after the last observation (a forecasting cut in training) must not reach z0: at
    prediction time the context simply ends at its last observation."""
    gen = torch.Generator().manual_seed(6)
    torch.manual_seed(6)
    enc = ENCODERS[name](4, 3, hidden_dim=8, width=16, n_layers=2, anchor=anchor)
    t, x, m = batch(gen, b=2, t=5)
    m[:, -1] = 1.0
    x = x * m
    mu, sigma = enc(t, x, m)
    later = t[:, -1:] + torch.tensor([[0.4, 1.7]])
    t2 = torch.cat([t, later], 1)
    x2 = torch.cat([x, torch.zeros(2, 2, 4)], 1)
    m2 = torch.cat([m, torch.zeros(2, 2, 4)], 1)
    mu2, sigma2 = enc(t2, x2, m2)
    torch.testing.assert_close(mu2, mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sigma2, sigma, rtol=1e-5, atol=1e-6)


def test_model_decode_at_the_anchor_is_the_readout_of_z0():
    """decode() measures query times from each series' anchor: at t0 itself it returns readout(z0),
    for queries before and after it it solves backwards and forwards."""
    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    model = LatentODE(4, 3, encoder="odernn", encoder_dim=8, width=16, n_layers=2, anchor="last")
    t, x, m = batch(gen, b=2, t=5)
    mu, sigma, t0, _ = model.encode(t, x, m)
    torch.testing.assert_close(t0, last_observed_time(t, m))
    tq = torch.stack([torch.zeros(2), t0, t0 + 0.5], dim=1)
    with torch.no_grad():
        out = model.decode(mu.unsqueeze(0), tq, t0, method="dopri5", rtol=1e-6, atol=1e-8, adjoint=False)[0]
        torch.testing.assert_close(out[:, 1], model.decoder.readout(mu), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(out[:, 0], out[:, 1]) and not torch.allclose(out[:, 2], out[:, 1])
        origin = LatentODE(4, 3, encoder="odernn", encoder_dim=8, width=16, n_layers=2)
        assert torch.equal(origin.encode(t, x, m)[2], torch.zeros(2))


def test_series_level_reads_only_observed_values():
    x = torch.tensor([[[1.0, 5.0], [2.0, 7.0], [3.0, 9.0]]])   # (1 series, 3 steps, 2 variables)
    m = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])   # variable 1 never observed; step 2 hidden
    torch.testing.assert_close(series_level("last", x, m), torch.tensor([[2.0, 0.0]]))
    torch.testing.assert_close(series_level("mean", x, m), torch.tensor([[1.5, 0.0]]))
    torch.testing.assert_close(series_level(None, x, m), torch.zeros(1, 2))


def test_interpolate_observed_by_hand():
    t = torch.tensor([[0.0, 1.0, 2.0, 4.0, 4.0]])                          # last step: padding
    x = torch.tensor([[[1.0, 0.0, 5.0], [9.0, 0.0, 0.0], [3.0, 2.0, 0.0], [5.0, 4.0, 0.0], [0.0, 0.0, 0.0]]])
    m = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    tq = torch.tensor([[-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 7.0]])
    out = interpolate_observed(t, x, m, tq)
    # variable 0: observed at 0, 2, 4 (the 9.0 at t=1 is hidden); variable 1: at 2, 4; variable 2: only at 0
    expected = torch.tensor([[[1.0, 2.0, 5.0], [1.0, 2.0, 5.0], [1.5, 2.0, 5.0], [2.0, 2.0, 5.0], [3.0, 2.0, 5.0],
                              [4.0, 3.0, 5.0], [5.0, 4.0, 5.0], [5.0, 4.0, 5.0]]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(interpolate_observed(t, x, torch.zeros_like(m), tq), torch.zeros(1, 8, 3))


@pytest.mark.parametrize("center", [None, "last", "mean", "interp"])
def test_center_adds_the_reference_to_the_read_out(center):
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    model = LatentODE(4, 3, encoder="odernn", encoder_dim=8, width=16, n_layers=2, center=center)
    t, x, m = batch(gen, b=2, t=5)
    post = model.encode(t, x, m)
    tq = torch.stack([torch.zeros(2), torch.full((2,), 0.7), t[:, -1] + 1.0], dim=1)
    ref = post.reference.at(tq)
    assert ref.shape == (2, 3, 4)
    if center == "interp":
        torch.testing.assert_close(ref, interpolate_observed(t, x, m, tq))
        torch.testing.assert_close(ref[:, -1], series_level("last", x, m))  # past the end: the last value
    else:
        torch.testing.assert_close(ref, series_level(center, x, m).unsqueeze(1).expand(-1, 3, -1))
    # values the encoder does not see change neither z0 nor the reference
    hidden = model.encode(t, x + 50.0 * (1 - m), m)
    torch.testing.assert_close(hidden.reference.at(tq), ref)
    torch.testing.assert_close(hidden.mu, post.mu)
    with torch.no_grad():
        plain = model.decode(post.mu.unsqueeze(0), tq, post.t0, method="rk4")
        shifted = model.decode(post.mu.unsqueeze(0), tq, post.t0, post.reference, method="rk4")
    torch.testing.assert_close(shifted, plain + ref.unsqueeze(0))


def test_attention_attends_each_variable_to_its_own_observations():
    """Each attended value is a convex combination of that variable's observed values; a variable never
    observed gives value 0 and attention share 0; removing the per-variable mask breaks both."""
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    enc = ENCODERS["attention"](4, 3, hidden_dim=8, width=16, n_ref=5, n_heads=2)
    t, x, m = batch(gen, b=2, t=7)
    m[1, :, 3] = 0.0  # series 1 never observes variable 3
    m[:, 2, 0] = 1.0
    x = (x + 5.0 * torch.arange(4.0)) * m   # each variable its own range
    seq = enc.attend(t, x, m)                 # (batch, n_ref, 2 * heads * features + 1)
    assert seq.shape == (2, 5, 2 * 2 * 4 + 1)
    feats = seq[..., :-1].reshape(2, 5, 2, 2 * 4)
    value, share = feats[..., :4], feats[..., 4:]
    for b in range(2):
        for j in range(4):
            obs = x[b, m[b, :, j] > 0, j]
            if len(obs) == 0:
                assert torch.equal(value[b, ..., j], torch.zeros_like(value[b, ..., j]))
                assert torch.equal(share[b, ..., j], torch.zeros_like(share[b, ..., j]))
            else:
                assert (value[b, ..., j] >= obs.min() - 1e-5).all() and (value[b, ..., j] <= obs.max() + 1e-5).all()
                assert ((share[b, ..., j] > 0) & (share[b, ..., j] <= 1 + 1e-6)).all()
    # the spacing of the reference times: the last observed time / (n_ref - 1)
    torch.testing.assert_close(seq[:, 0, -1], last_observed_time(t, m) / 4)


def test_attention_reference_times_end_at_the_last_observation():
    """The same observations, the window start moved: the reference times span origin -> last observation,
    so z0 changes with where the origin lies."""
    gen = torch.Generator().manual_seed(8)
    torch.manual_seed(8)
    enc = ENCODERS["attention"](4, 3, hidden_dim=8, width=16)
    t, x, m = batch(gen, b=1)
    m[:, 0] = 1.0
    assert not torch.allclose(enc(t + 0.5, x * m, m)[0], enc(t, x * m, m)[0])


def test_reference_context_by_hand():
    from latentode.model import N_CONTEXT, Reference
    t = torch.tensor([[0.0, 1.0, 2.0]])
    x = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 0.0]]])
    m = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])       # variable 0 seen at 0 and 1; variable 1 never
    tq = torch.tensor([[0.5, 1.0, 3.0]])
    c = Reference(None, t, x, m).context(tq)
    assert c.shape == (1, 3, 2, N_CONTEXT)
    # at 1.0 the value observed there is left out: the one at 0 is carried, and the query lies past the others
    torch.testing.assert_close(c[0, :, 0, 0], torch.tensor([2.0, 1.0, 3.0]))               # interpolated, then carried
    torch.testing.assert_close(c[0, :, 0, 1], torch.log1p(torch.tensor([0.5, 1.0, 2.0])))  # to the nearest other value
    torch.testing.assert_close(c[0, :, 0, 2], torch.ones(3))
    torch.testing.assert_close(c[0, :, 0, 3], torch.tensor([0.0, 1.0, 1.0]))               # outside the others' span
    assert torch.equal(c[0, :, 1], torch.zeros(3, N_CONTEXT))                               # never seen: all 0


def test_per_variable_readout_starts_linear_and_reads_the_context():
    from latentode.model import Reference
    gen = torch.Generator().manual_seed(9)
    torch.manual_seed(9)
    model = LatentODE(4, 3, encoder="gru", encoder_dim=8, width=16, n_layers=2, readout="per_variable")
    readout = model.decoder.readout
    z = torch.randn(2, 3, 5, 3, generator=gen)
    ctx = torch.randn(3, 5, 4, 4, generator=gen)
    torch.testing.assert_close(readout(z, ctx), readout.linear(z))   # the variables' output weights start at 0
    with torch.no_grad():
        readout.out.normal_(generator=gen)
    assert not torch.allclose(readout(z, ctx), readout(z, None))
    with torch.no_grad():  # the gain adds the variable's own interpolated value, linearly
        readout.out.zero_()
        readout.gain.fill_(1.0)
    torch.testing.assert_close(readout(z, ctx), readout.linear(z) + ctx[..., 0])
    with torch.no_grad():
        readout.gain.zero_()
        readout.out.normal_(generator=gen)
    assert readout(z, ctx).shape == (2, 3, 5, 4)
    # decode hands the series' context to the read-out
    t, x, m = batch(gen, b=3, t=6)
    mu, _, t0, ref = model.encode(t, x, m)
    solver = dict(method="rk4", step_size=0.1, adjoint=False)
    with torch.no_grad():
        decoded = model.decode(mu.unsqueeze(0), t, t0, ref, **solver)
        z_t = decode_latent(model.decoder.dynamics, mu.unsqueeze(0), t - t0.unsqueeze(1), **solver)
    torch.testing.assert_close(decoded, readout(z_t, Reference(None, t, x, m).context(t)))
    assert not torch.allclose(decoded, readout(z_t, None))
