"""Latent-EnSF: the coupled VAE (fit, model file) and the filter with full-order forecasts.

The VAE round trip, its file and the run through ``assimilate`` use a VAE fitted in
seconds to Lorenz-96 (``small`` preset, 40 components, 8 runs of 21 frames). The skill of
the analysis is checked where it is known exactly: with a VAE made linear, the latent
problem is linear-Gaussian and the analysis must be the Kalman posterior of the encoded
members (a trained VAE on a real case bounds what any analysis of decoded members can
reach by its reconstruction error, which leaves no sharp expectation).
"""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest
import torch

import xldensf as xl
from xldensf.assimilation.latent_ensf import LatentEnSFAnalysis
from xldensf.errors import ConfigurationError, DataError, UnknownNameError
from xldensf.filters import EnSF
from xldensf.geometry import regular_layout
from xldensf.io import read_safetensors
from xldensf.surrogate import LatentModel, VAEModel, fit_vae
from xldensf.surrogate.vae import VAEMetadata
from xldensf.surrogate.vae_networks import CoupledVAE

SHIPPED = resources.files("xldensf") / "data" / "models" / "tsunami_small.ldensf"
#: Relative L2 error bound of the state encoder -> decoder round trip on the training
#: frames after the short Lorenz-96 fit below (measured 0.15; the bound leaves room for
#: other torch builds and CPUs).
RECONSTRUCTION_BOUND = 0.3
F64 = torch.float64
#: The linear-Gaussian analysis check: field values, stations, latent size, members,
#: independent problems (one batch), the latent observation error standard deviation and
#: where each of the VAE's observation entries stands in the filter's observation vector.
N_FIELD, N_OBS, LATENT, MEMBERS, TRIALS = 6, 3, 3, 400, 20
LATENT_OBS_STD = 0.5
OBS_ORDER = [2, 0, 1]
#: Largest error of the analysis mean, in posterior standard deviations, over the 20 x 3
#: latent components. The default EnSF's target is the exact Kalman analysis of the
#: ensemble's moments, and its centred noise removes the sampler's Monte Carlo error from
#: the mean, so only the sampler's discretisation error remains (measured 0.0012 to 0.0024
#: on seeds 0..4). The bound is ten times that, and far below the errors of a wrong
#: wiring: the prior mean is 4 to 7 std away, the observation entries taken in the
#: filter's order instead of the VAE's give 5 to 8 std.
MEAN_TOLERANCE = 0.02
#: Largest mean relative error of the analysis spread: the Monte Carlo error of a standard
#: deviation from 400 members, about 1 / sqrt(2 * 400) = 0.035 (measured 0.029 to 0.032
#: on seeds 0..4); a latent error std 10 % too large gives 0.094 to 0.113, twice too
#: large 0.70 to 0.98.
SPREAD_TOLERANCE = 0.08


@pytest.fixture(scope="module")
def train():
    return xl.simulate("lorenz96", runs=8, seed=0, preset="small", n_outputs=21)


@pytest.fixture(scope="module")
def vae(train):
    return fit_vae(train, stations=regular_layout(train, 20), seed=0, steps=1000, width=64,
                   depth=2, latent_dim=24, modes=40)


def _fields(dataset) -> torch.Tensor:
    return torch.as_tensor(dataset["x"].values.reshape(-1, 1, 40), dtype=torch.float32)


def _relative_error(vae: VAEModel, fields: torch.Tensor) -> float:
    decoded = vae.decode(vae.encode_state(fields)[0])
    return float(((decoded - fields).square().sum() / fields.square().sum()).sqrt())


def test_reconstruction_on_training_runs(vae, train):
    assert _relative_error(vae, _fields(train)) < RECONSTRUCTION_BOUND
    assert vae.metadata.training["seconds"] > 0
    assert vae.metadata.observed == ("x",) and vae.stations.shape == (20, 1)


def test_accessor_fit_vae_is_fit_vae(train):
    a = train.ldensf.fit_vae(regular_layout(train, 20), seed=3, steps=2, width=8, modes=8)
    b = fit_vae(train, regular_layout(train, 20), seed=3, steps=2, width=8, modes=8)
    fields = _fields(train)[:5]
    assert torch.equal(a.encode_state(fields)[0], b.encode_state(fields)[0])


def test_save_load_bitwise(vae, train, tmp_path):
    path = tmp_path / "model.vae"
    vae.save(path)
    loaded = VAEModel.from_file(path)
    fields = _fields(train)[:7]
    stations = fields[:, 0, ::2]
    for original, copy in ((vae.encode_state(fields), loaded.encode_state(fields)),
                           (vae.encode_observations(stations),
                            loaded.encode_observations(stations))):
        assert all(torch.equal(a, b) for a, b in zip(original, copy))
    latent = vae.encode_state(fields)[0]
    assert torch.equal(vae.decode(latent), loaded.decode(latent))
    assert loaded.metadata == vae.metadata


def test_model_file_header_is_the_former_one(vae, tmp_path):
    """The header written through ``model_file_header`` has the keys and values that
    ``VAEModel.save`` wrote by hand before it existed."""
    path = tmp_path / "model.vae"
    vae.save(path)
    _, header = read_safetensors(path, "VAE model file")
    network = vae.network
    config = {"n_variables": network.n_variables, "grid_shape": list(network.grid_shape),
              "n_obs": network.n_obs, "latent_dim": network.latent_dim,
              "width": network.width, "depth": network.depth, "n_modes": network.n_modes}
    assert header == {
        "format": "xldensf-vae-model",
        "format_version": "1",
        "config": json.dumps(config),
        "metadata": json.dumps(vae.metadata.to_dict()),
        "seed": str(vae.seed),
        "xldensf_version": xl.__version__,
        "torch_version": torch.__version__,
    }


def test_corrupt_and_foreign_files_refused(vae, tmp_path):
    path = tmp_path / "model.vae"
    vae.save(path)
    data = bytearray(path.read_bytes())
    (tmp_path / "truncated.vae").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DataError, match="safetensors"):
        VAEModel.from_file(tmp_path / "truncated.vae")
    data[8:40] = b"#" * 32  # the JSON header
    (tmp_path / "corrupt.vae").write_bytes(bytes(data))
    with pytest.raises(DataError):
        VAEModel.from_file(tmp_path / "corrupt.vae")
    with pytest.raises(DataError, match="xldensf-vae-model"):
        VAEModel.from_file(str(SHIPPED))  # a LatentModel file
    with pytest.raises(DataError, match="xldensf-latent-model"):
        LatentModel.from_file(path)


def linear_vae(generator: torch.Generator) -> tuple[VAEModel, dict[str, torch.Tensor]]:
    """A coupled VAE made linear: one affine layer per network (identity normalisation
    and basis), the observation encoder's log-variance the constant of LATENT_OBS_STD."""
    def layer(weight: torch.Tensor, bias: torch.Tensor) -> torch.nn.Sequential:
        affine = torch.nn.Linear(weight.shape[1], weight.shape[0]).double()
        with torch.no_grad():
            affine.weight.copy_(weight)
            affine.bias.copy_(bias)
        return torch.nn.Sequential(affine)

    maps = {"encoder": torch.randn(LATENT, N_FIELD, generator=generator, dtype=F64)
            / N_FIELD ** 0.5,
            "obs_encoder": torch.eye(LATENT, N_OBS, dtype=F64)
            + 0.3 * torch.randn(LATENT, N_OBS, generator=generator, dtype=F64),
            "decoder": torch.randn(N_FIELD, LATENT, generator=generator, dtype=F64),
            "offset": torch.randn(N_FIELD, generator=generator, dtype=F64)}
    network = CoupledVAE(1, (N_FIELD,), N_OBS, LATENT, width=4, depth=1,
                         n_modes=N_FIELD).double()
    zeros = torch.zeros(2 * LATENT, dtype=F64)
    network.state_encoder = layer(torch.cat([maps["encoder"],
                                             torch.zeros(LATENT, N_FIELD, dtype=F64)]), zeros)
    network.observation_encoder = layer(
        torch.cat([maps["obs_encoder"], torch.zeros(LATENT, N_OBS, dtype=F64)]),
        torch.cat([zeros[:LATENT], torch.full((LATENT,), 2 * math.log(LATENT_OBS_STD),
                                              dtype=F64)]))
    network.decoder = layer(maps["decoder"], maps["offset"])
    metadata = VAEMetadata(("x",), {"x": "1"}, ("k",), (N_FIELD,), ("x",), ("k",),
                           [[0.0], [2.0], [4.0]])
    return VAEModel(network, metadata), maps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_latent_analysis_is_the_latent_kalman_posterior(seed):
    """With a linear VAE the latent problem is linear-Gaussian: the analysis must be the
    Kalman analysis of the encoded members' mean and covariance (identity operator, the
    observation encoder's mean and standard deviation, its entries picked in the VAE's
    order), decoded; the parameter columns pass through unchanged."""
    generator = torch.Generator().manual_seed(seed)
    vae, maps = linear_vae(generator)
    kernel = LatentEnSFAnalysis(vae, N_FIELD, OBS_ORDER, EnSF())
    mixing = torch.randn(N_FIELD, N_FIELD, generator=generator, dtype=F64)
    fields = torch.randn(TRIALS, MEMBERS, N_FIELD, generator=generator, dtype=F64) @ mixing.T
    parameters = torch.randn(TRIALS, MEMBERS, 1, generator=generator, dtype=F64)
    observations = torch.randn(TRIALS, N_OBS, generator=generator, dtype=F64)
    out = kernel.analysis(torch.cat([fields, parameters], dim=-1), observations, None, None,
                          torch.Generator().manual_seed(seed + 100))
    assert torch.equal(out[..., N_FIELD:], parameters)
    # The exact reference, from the linear maps alone.
    latent = fields @ maps["encoder"].T
    mean = latent.mean(1)
    anomalies = latent - mean[:, None]
    covariance = anomalies.transpose(1, 2) @ anomalies / (MEMBERS - 1)
    latent_obs = observations[:, OBS_ORDER] @ maps["obs_encoder"].T
    gain = covariance @ torch.linalg.inv(covariance
                                         + LATENT_OBS_STD ** 2 * torch.eye(LATENT, dtype=F64))
    posterior_mean = mean + (gain @ (latent_obs - mean)[..., None])[..., 0]
    posterior_std = (covariance - gain @ covariance).diagonal(dim1=1, dim2=2).sqrt()
    # The analysed latents, recovered exactly from the decoded fields (full column rank).
    analysed = (out[..., :N_FIELD] - maps["offset"]) @ torch.linalg.pinv(maps["decoder"]).T
    mean_error = float(((analysed.mean(1) - posterior_mean) / posterior_std).abs().max())
    spread_error = float((analysed.std(1) / posterior_std - 1).abs().mean())
    prior_error = float(((mean - posterior_mean) / posterior_std).abs().max())
    assert prior_error > 2.0  # the observations move the members: the check has teeth
    assert mean_error < MEAN_TOLERANCE, mean_error
    assert spread_error < SPREAD_TOLERANCE, spread_error


def test_filter_runs_through_assimilate(vae):
    truth = xl.simulate("lorenz96", runs=1, seed=101, preset="small", n_outputs=11).isel(run=0)
    obs = truth.ldensf.observe(stations=vae.layout(), noise=0.1, seed=0)
    model = xl.simulator("lorenz96", preset="small")
    latent = obs.ldensf.assimilate(model, method="latent-ensf", vae=vae, members=10, seed=0)
    assert latent.attrs["xldensf_method"] == "latent-ensf"
    assert latent["x"].dims == ("time", "member", "k")
    assert np.isfinite(latent["x"].values).all()
    # vae= alone selects the method
    again = obs.isel(time=slice(0, 3)).ldensf.assimilate(model, vae=vae, members=10, seed=0)
    np.testing.assert_array_equal(again["x"].values, latent["x"].values[:3])


def test_bad_input(vae, train):
    truth = train.isel(run=0)
    model = xl.simulator("lorenz96", preset="small")
    obs = truth.ldensf.observe(stations=vae.layout(), noise=0.1, seed=0)
    with pytest.raises(ConfigurationError, match="vae: expected a VAEModel"):
        obs.ldensf.assimilate(model, method="latent-ensf", members=5)
    moved = truth.ldensf.observe(stations=regular_layout(train, 10), noise=0.1, seed=0)
    with pytest.raises(ConfigurationError, match="station layout .* expected the 20 stations"):
        moved.ldensf.assimilate(model, method="latent-ensf", vae=vae, members=5)
    with pytest.raises(ConfigurationError, match="model with latent-ensf"):
        obs.ldensf.assimilate(LatentModel.from_file(str(SHIPPED)), method="latent-ensf",
                              vae=vae, members=5)
    with pytest.raises(DataError, match="model variables"):
        obs.ldensf.assimilate(xl.simulator("tsunami", preset="small"), method="latent-ensf",
                              vae=vae, members=5)
    with pytest.raises(UnknownNameError):
        obs.rename(x="y").ldensf.assimilate(model, method="latent-ensf", vae=vae, members=5)
    with pytest.raises(ConfigurationError, match="ensf settings"):
        obs.ldensf.assimilate(model, method="latent-ensf", vae=vae, members=5, bogus=1)
