"""Unit tests of the latent surrogate: networks, normalisation, LatentModel, files."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import safetensors.torch
import torch

import xldensf as xl
from xldensf.surrogate import (
    AffineNormalizer,
    EncoderConfig,
    LatentModel,
    LDNetConfig,
    ObservationEncoder,
    SurrogateMetadata,
    load_model,
)
from xldensf.surrogate.model import FORMAT_VERSION

TINY = LDNetConfig.small().replace(latent_dim=3, dynamics_width=8, reconstruction_width=12,
                                   reconstruction_depth=3, fourier_features=4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The CI and dev machines are shared: one thread avoids oversubscription (measured
    10x slower steps with 2 threads under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def travelling_wave(parameters: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                    width: float = 0.25) -> torch.Tensor:
    """Gaussian pulse ``h = exp(-((x - x0 - c t) / width)^2)`` and flux ``q = c h``.

    parameters ``(runs, 2)`` = (c, x0) -> fields ``(runs, time, 2, points)``.
    """
    speed, start = parameters[:, 0, None, None], parameters[:, 1, None, None]
    height = torch.exp(-((x[None, None, :] - start - speed * t[None, :, None]) / width) ** 2)
    return torch.stack([height, speed * height], dim=2)


def make_model(config: LDNetConfig = TINY, stations: bool = False, grid=(5, 4),
               seed: int = 0) -> LatentModel:
    """An untrained model on a 2-D grid with 2 variables and 2 parameters."""
    axes = [torch.linspace(-1.0, 2.0, grid[0]), torch.linspace(0.0, 10.0, grid[1])]
    coords = torch.stack([a.ravel() for a in torch.meshgrid(*axes, indexing="ij")], dim=-1)
    metadata = SurrogateMetadata(
        variables=("h", "q"), variable_attrs={"h": {"units": "m"}, "q": {"units": "m2 s-1"}},
        coordinate_names=("y", "x"), grid_shape=tuple(grid),
        times=(0.0, 0.5, 1.0), parameters=("a", "b"),
        parameter_ranges=((0.0, 1.0), (-2.0, 2.0)),
        stations=((0.0, 5.0), (1.0, 2.0), (2.0, 10.0)) if stations else None,
    )
    encoder = EncoderConfig.small().replace(hidden_size=6, layers=1) if stations else None
    model = LatentModel(config, metadata, coords, encoder, seed=seed)
    model.field_normalizer = AffineNormalizer(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5]))
    return model.eval()


# ---------------------------------------------------------------------- configuration
@pytest.mark.parametrize("case, sizes", [
    # REFERENCES §2: latent, F depth x width, R residual depth x width, Fourier features
    ("tsunami", (10, 8, 50, 10, 300, 64)),
    ("atmosphere", (50, 8, 200, 15, 500, 50)),
    ("kolmogorov", (9, 9, 200, 14, 500, 10)),
])
def test_presets_have_the_paper_sizes(case, sizes):
    paper = LDNetConfig.paper(case)
    assert (paper.latent_dim, paper.dynamics_depth, paper.dynamics_width,
            paper.reconstruction_depth, paper.reconstruction_width,
            paper.fourier_features) == sizes
    assert LDNetConfig.paper() == LDNetConfig.paper("tsunami")
    with pytest.raises(xl.UnknownNameError, match="case"):
        LDNetConfig.paper("lorenz96")


@pytest.mark.parametrize("changes", [{"latent_dim": 0}, {"activation": "relu6"},
                                     {"validation_fraction": 1.0}, {"learning_rate": -1.0},
                                     {"not_a_field": 1}])
def test_bad_configurations_raise(changes):
    with pytest.raises(xl.XLDEnSFError):
        LDNetConfig.small().replace(**changes)


# ---------------------------------------------------------------------- normalisation
def test_spread_normalisation_standardises_and_round_trips():
    data = torch.randn(7, 3, 50, dtype=torch.float64) * torch.tensor([1.0, 10.0, 1e-3])[:, None] \
        + torch.tensor([5.0, -3.0, 0.0])[:, None]
    norm = AffineNormalizer.from_spread(data, dim=1)
    normalized = norm.normalize(data, dim=1)
    # stored statistics are float32: agreement to ~1e-6 relative
    assert torch.allclose(normalized.mean(dim=(0, 2)), torch.zeros(3, dtype=torch.float64),
                          atol=1e-5)
    assert torch.allclose(normalized.std(dim=(0, 2), unbiased=False),
                          torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(norm.denormalize(normalized, dim=1), data, rtol=1e-12, atol=1e-12)


def test_constant_channel_does_not_divide_by_zero():
    norm = AffineNormalizer.from_range(torch.full((4, 1), 3.0), dim=-1)
    assert torch.isfinite(norm.normalize(torch.tensor([[3.0]]))).all()


# ---------------------------------------------------------------------- networks
@pytest.mark.parametrize("original", [False, True])
def test_initial_latent_is_shifted_only_in_the_improved_variant(original):
    model = make_model(TINY.replace(original=original))
    u = torch.tensor([[-1.0, 0.0], [1.0, 0.5]])
    s0 = model.unroll(u, n_steps=1)[:, 0]
    if original:
        assert torch.equal(s0, torch.zeros_like(s0))
    else:  # s_0 = (dt/dt_ref) F(0, u): different for different parameters
        expected = TINY.time_scale * model.ldnet.dynamics(torch.zeros(2, 3), u)
        assert torch.allclose(s0, expected, atol=1e-7)
        assert not torch.allclose(s0[0], s0[1])


def test_original_variant_has_no_fourier_features_or_modulation():
    improved, original = make_model(), make_model(TINY.replace(original=True,
                                                               latent_modulation=True))
    names = {name for name, _ in original.named_buffers()}
    assert not any("frequencies" in name for name in names)
    assert any("frequencies" in name for name, _ in improved.named_buffers())
    assert not any("modulation" in name for name, _ in original.named_parameters())


def test_latent_modulation_starts_as_the_plain_network_and_then_acts():
    """FiLM of R's hidden layers: zero-initialised (same outputs as without it), and once its
    weights are non-zero the latent changes every hidden layer, not just the first."""
    plain = make_model(TINY.replace(reconstruction_depth=3))
    modulated = make_model(TINY.replace(reconstruction_depth=3, latent_modulation=True))
    plain_state = plain.state_dict()
    assert set(plain_state) < set(modulated.state_dict())   # only the FiLM map is added
    modulated.load_state_dict(plain_state, strict=False)
    u = torch.tensor([[-1.0, 0.0], [1.0, 0.5]])
    with torch.no_grad():
        latents = plain.unroll(u)
        # equal up to float32 rounding: the plain model decodes through the hand-written
        # inference path (LatentModel.decoder_at), the modulated one through the modules
        assert torch.allclose(modulated.decode(latents), plain.decode(latents), atol=1e-6)
        torch.nn.init.normal_(modulated.ldnet.reconstruction.modulation.weight)
        assert not torch.allclose(modulated.decode(latents), plain.decode(latents), atol=1e-3)
    # saved configurations without the field (older files) load as unmodulated
    values = TINY.to_dict()
    del values["latent_modulation"]
    assert LDNetConfig.from_dict(values).latent_modulation is False


def test_shapes_of_the_tensor_methods():
    model = make_model()
    u = torch.zeros(6, 2)
    latents = model.unroll(u)                           # default: one per training frame
    assert latents.shape == (6, 3, 3)
    assert model.decode(latents).shape == (6, 3, 2, 5, 4)          # grid shape restored
    assert model.decode(latents[:, 0], torch.rand(9, 2)).shape == (6, 2, 9)
    assert model.decode(latents[:, 0], torch.rand(6, 9, 2)).shape == (6, 2, 9)
    assert model.advance(latents[:, 0], u, steps=2).shape == (6, 3)


def test_advance_continues_unroll_exactly():
    model = make_model()
    u = torch.tensor([[0.3, -0.7], [0.9, 0.1]])
    latents = model.unroll(u, n_steps=5)
    # the same Euler steps in the same order: bitwise equal
    assert torch.equal(model.advance(latents[:, 0], u, steps=4), latents[:, 4])
    assert torch.equal(model.advance(latents[:, 2], u, steps=0), latents[:, 2])


@pytest.mark.parametrize("original", [False, True])
def test_fused_rollout_equals_the_defining_euler_steps(original):
    """``unroll``/``advance`` run a fused loop (DynamicsNetwork.euler_trajectory); it must be
    the recursion s_{k+1} = s_k + (dt/dt_ref) F(s_k, u) from s_{-1} = 0 (improved) or
    s_0 = 0 (original), up to float32 rounding (1e-6 on states of order 1)."""
    model = make_model(TINY.replace(original=original, dynamics_depth=3))
    u = torch.tensor([[0.3, -0.7], [0.9, 0.1], [-1.0, 1.0]])
    state = torch.zeros(3, TINY.latent_dim)
    expected = [state] if original else []
    with torch.no_grad():
        while len(expected) < 6:
            state = model.ldnet.step(state, u)
            expected.append(state)
        assert torch.allclose(model.unroll(u, n_steps=6), torch.stack(expected, 1), atol=1e-6)
        # leading dims broadcast: one start state for a batch of parameters
        shared = model.advance(expected[1][:1], u, steps=2)
        assert shared.shape == (3, TINY.latent_dim)
        assert torch.allclose(shared[0], expected[3][0], atol=1e-6)


def test_decode_on_training_points_equals_decode_at_their_coordinates():
    model = make_model()
    s = torch.randn(2, 3)
    grid = model.decode(s).flatten(-2)
    assert torch.allclose(grid, model.decode(s, model.coordinates), atol=1e-6)


def test_wrong_shapes_raise_configuration_error():
    model = make_model()
    with pytest.raises(xl.ConfigurationError, match="latent shape"):
        model.decode(torch.zeros(2, 4))
    with pytest.raises(xl.ConfigurationError, match="normalised parameters"):
        model.advance(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(xl.ConfigurationError, match="encoder"):
        model.encode(torch.zeros(1, 2, 3, 2))


def test_gradcheck_decode_wrt_latent_and_coordinates():
    model = make_model().double()
    latent = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    coords = torch.rand(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, x: model.decode(s, x), (latent, coords))


def test_gradcheck_advance_wrt_latent_and_parameters():
    model = make_model().double()
    latent = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    u = torch.rand(2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, p: model.advance(s, p, steps=3), (latent, u))


def test_parameter_normalisation_maps_training_range_to_unit_interval():
    model = make_model()
    physical = torch.tensor([[0.0, -2.0], [1.0, 2.0]])
    assert torch.equal(model.normalize_parameters(physical),
                       torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    assert torch.allclose(model.denormalize_parameters(model.normalize_parameters(physical)),
                          physical)


# ---------------------------------------------------------------------- encoder
def test_encoder_is_causal_and_tolerates_missing_values():
    encoder = ObservationEncoder(3, 2, latent_dim=4, n_parameters=1,
                                 config=EncoderConfig.small().replace(hidden_size=5, layers=1))
    observations = torch.randn(2, 6, 3, 2)
    latent, parameters = encoder(observations)
    changed = observations.clone()
    changed[:, 4] = float("nan")            # a gap at time 4
    latent_changed, parameters_changed = encoder(changed)
    assert torch.isfinite(latent_changed).all() and torch.isfinite(parameters_changed).all()
    # estimates up to time 3 only see y_{0:3}: unchanged bitwise; time 4 changes
    assert torch.equal(latent[:, :4], latent_changed[:, :4])
    assert not torch.allclose(latent[:, 4], latent_changed[:, 4])


def test_model_encode_shapes():
    model = make_model(stations=True)
    latent, parameters = model.encode(torch.randn(5, 3, 3, 2))
    assert latent.shape == (5, 3) and parameters.shape == (5, 2)
    latent, parameters = model.encode(torch.randn(5, 3, 3, 2), all_times=True)
    assert latent.shape == (5, 3, 3) and parameters.shape == (5, 3, 2)
    with pytest.raises(xl.ConfigurationError, match="observations shape"):
        model.encode(torch.randn(5, 3, 4, 2))


# ---------------------------------------------------------------------- files
def _outputs(model: LatentModel) -> list[torch.Tensor]:
    u = torch.tensor([[0.2, 0.4], [-0.5, 0.9]], dtype=model.dtype)
    out = [model.decode(model.unroll(u, 4))]
    if model.encoder is not None:
        out.extend(model.encode(torch.randn(2, 3, 3, 2, generator=torch.Generator().manual_seed(0),
                                            dtype=model.dtype)))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_load_gives_identical_outputs(tmp_path, dtype):
    model = make_model(stations=True, seed=3).to(dtype)
    path = tmp_path / "model.ldensf"
    model.save(path)
    loaded = load_model(path)
    assert loaded.dtype == dtype
    assert loaded.metadata == model.metadata and loaded.config == model.config
    for expected, found in zip(_outputs(model), _outputs(loaded)):
        assert torch.equal(expected, found)
    assert sorted(os.listdir(tmp_path)) == ["model.ldensf"]  # no temporary files left


def test_model_file_is_plain_safetensors_with_json_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    make_model().save(path)
    header_length = struct.unpack("<Q", path.read_bytes()[:8])[0]
    header = json.loads(path.read_bytes()[8 : 8 + header_length])["__metadata__"]
    assert header["format"] == "xldensf-latent-model"
    assert header["format_version"] == str(FORMAT_VERSION)
    assert json.loads(header["metadata"])["variable_attrs"]["h"]["units"] == "m"
    assert header["torch_version"] == torch.__version__


def _corrupt_files(tmp_path):
    good = tmp_path / "good.ldensf"
    make_model().save(good)
    data = good.read_bytes()
    header_length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_length])["__metadata__"]
    tensors = safetensors.torch.load(data)
    future = dict(header, format_version=str(FORMAT_VERSION + 1))
    missing = {key: value for key, value in tensors.items() if "dynamics" not in key}
    return {
        "missing": None,
        "empty": b"",
        "truncated-header": data[:20],
        "truncated-data": data[: len(data) - 100],
        "garbage": bytes(range(256)) * 10,
        "json-text": b'{"a": 1}',
        "foreign-safetensors": safetensors.torch.save({"w": torch.zeros(3)}),
        "future-version": safetensors.torch.save(tensors, future),
        "missing-weights": safetensors.torch.save(missing, header),
        "bad-metadata": safetensors.torch.save(tensors, dict(header, metadata="{not json")),
    }


def test_corrupt_truncated_and_foreign_files_raise_data_error(tmp_path):
    for name, content in _corrupt_files(tmp_path).items():
        path = tmp_path / f"{name}.ldensf"
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(xl.DataError):
            load_model(path)


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.ldensf"
    make_model(seed=1).save(path)
    before = path.read_bytes()

    def broken_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        make_model(seed=2).save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.ldensf"]


SHIPPED_MODEL = os.path.join(os.path.dirname(xl.__file__), "data", "models",
                             "tsunami_small.ldensf")


def test_shipped_model_reads_and_rewrites_in_the_same_format(tmp_path):
    model = LatentModel.from_file(SHIPPED_MODEL)
    assert isinstance(model, LatentModel) and not model.training
    # values recorded with the layout before the surrogate package split (same machine:
    # equal to the last bit; here a tolerance for other CPUs / BLAS builds)
    with torch.no_grad():
        latent = model.unroll(torch.zeros(1, 2), 3)[0, 2, :4]
    expected = [-0.6489944458007812, 0.725078821182251, 0.6562266945838928,
                0.44142019748687744]
    np.testing.assert_allclose(latent.numpy(), expected, rtol=1e-5)
    result = model.forecast({"x0": -2e5, "y0": -2e5}, times=[model.metadata.times[10]])
    np.testing.assert_allclose(
        result["eta"].values[0, 0, 20:23, 30],
        [-0.09845077991485596, -0.09829691052436829, -0.09751670062541962], rtol=1e-4)
    path = tmp_path / "again.ldensf"
    model.save(path)
    original = safetensors.torch.load_file(SHIPPED_MODEL)
    rewritten = safetensors.torch.load_file(path)
    assert sorted(original) == sorted(rewritten)
    assert all(torch.equal(original[key], rewritten[key]) for key in original)
    with safetensors.safe_open(SHIPPED_MODEL, "pt") as old, safetensors.safe_open(path,
                                                                                  "pt") as new:
        old_header, new_header = old.metadata(), new.metadata()
    versions = ("xldensf_version", "torch_version")
    assert {key: value for key, value in old_header.items() if key not in versions} == \
        {key: value for key, value in new_header.items() if key not in versions}
    loaded = load_model(path)
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.unroll(torch.zeros(2, 2))),
                           model.decode(model.unroll(torch.zeros(2, 2))))


def test_load_on_requested_device_and_numpy_inputs(tmp_path):
    path = tmp_path / "model.ldensf"
    make_model().save(path)
    model = load_model(path, device="cpu")
    assert model.device == torch.device("cpu") and not model.training
    fields = model.decode(np.zeros((1, 3)))
    assert fields.dtype == torch.float32
