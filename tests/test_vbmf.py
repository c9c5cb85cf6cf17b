"""EVBMF rank estimation."""

import numpy as np
import pytest

from sparsecomp.vbmf import evbmf, evbmf_rank, tucker2_ranks


@pytest.mark.parametrize("rank", [1, 3, 7])
@pytest.mark.parametrize("shape", [(30, 80), (80, 30), (50, 50)])
def test_recovers_rank_of_noisy_low_rank_matrix(rank, shape):
    rng = np.random.default_rng(rank)
    Y = rng.normal(size=(shape[0], rank)) @ rng.normal(size=(rank, shape[1]))
    Y += 0.05 * rng.normal(size=shape)
    assert evbmf_rank(Y) == rank


def test_pure_noise_has_rank_zero_and_reconstruction_is_close():
    rng = np.random.default_rng(0)
    assert evbmf_rank(rng.normal(size=(30, 50))) == 0
    Y = rng.normal(size=(20, 2)) @ rng.normal(size=(2, 40)) + 0.01 * rng.normal(size=(20, 40))
    r = evbmf(Y)
    rec = r.U @ np.diag(r.s) @ r.V.T
    assert np.linalg.norm(rec - Y) / np.linalg.norm(Y) < 0.05


def test_bad_input_raises():
    with pytest.raises(ValueError):
        evbmf(np.zeros((3, 4)))
    with pytest.raises(ValueError):
        evbmf(np.array([[1.0, np.nan], [0.0, 1.0]]))


def test_tucker2_ranks_of_low_rank_kernel():
    rng = np.random.default_rng(0)
    core = rng.normal(size=(3, 2, 3, 3))
    u_out, u_in = rng.normal(size=(24, 3)), rng.normal(size=(16, 2))
    w = np.einsum("abij,oa,cb->ocij", core, u_out, u_in) + 0.01 * rng.normal(size=(24, 16, 3, 3))
    assert tucker2_ranks(w) == (3, 2)
    with pytest.raises(ValueError):
        tucker2_ranks(np.ones((4, 4)))
