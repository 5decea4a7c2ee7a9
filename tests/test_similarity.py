import numpy as np
import pytest
import torch

import atlasgen.similarity as similarity
from atlasgen.similarity import CoActivation, cross_activation, top_similar


def activations(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    act = torch.randn(12, 5, 4, 3, generator=generator)
    act[:, 1] = 0.6 * act[:, 0] + 0.4 * act[:, 1]  # correlated with 0
    act[:, 2] = 1000.0 + act[:, 2] * 1e-2  # large mean, small spread: tests cancellation
    act[:, 3] = act[:, 0]  # an exact copy
    act[:, 4] = 7.0  # constant
    return act


def brute_force(act: torch.Tensor) -> np.ndarray:
    return act.double().movedim(1, -1).reshape(-1, act.shape[1]).numpy()


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_correlation_mean_std_match_numpy_over_batches(dtype, tolerance):
    act = activations()
    co = CoActivation(5, product_dtype=dtype)
    for chunk in act.split(5):  # uneven batches
        co.update(chunk)
    x = brute_force(act)
    assert co.count == x.shape[0]
    assert np.allclose(co.mean(), x.mean(0), rtol=tolerance, atol=tolerance)
    assert np.allclose(co.std(), x.std(0), rtol=tolerance * 10, atol=tolerance)
    live = [0, 1, 2, 3]
    corr = co.correlation()
    assert np.allclose(corr[np.ix_(live, live)], np.corrcoef(x[:, live].T), atol=tolerance * 10)


@pytest.mark.parametrize("channels", [1, 5, 128, 129, 300, 1024])
def test_triangle_blocks_cover_the_upper_triangle_once(channels):
    covered = np.zeros((channels, channels), dtype=int)
    for a0, a1, b0, b1 in similarity.triangle_blocks(0, channels):
        assert a1 - a0 <= similarity.BLOCK_CHANNELS or a0 != b0  # only small diagonal blocks are whole
        covered[a0:a1, b0:b1] += 1
    upper = np.triu(np.ones((channels, channels), dtype=bool))
    assert np.all(covered[upper] == 1)
    assert np.all((covered == 0) | (covered == 1))


def test_blocks_above_the_diagonal_give_the_full_matrix(monkeypatch):
    monkeypatch.setattr(similarity, "BLOCK_CHANNELS", 2)  # 5 channels: diagonal blocks of 1 and 2
    generator = torch.Generator().manual_seed(4)
    act = torch.randn(6, 5, 3, 3, generator=generator)
    co = CoActivation(5, product_dtype=torch.float64)
    co.update(act)
    assert len(co._blocks) == 5
    x = brute_force(act)
    assert np.allclose(co.correlation(), np.corrcoef(x.T), atol=1e-12)


@pytest.mark.parametrize("onednn", [True, False])
def test_products_match_float64_with_and_without_onednn(monkeypatch, onednn):
    if onednn and not similarity._onednn_products(torch.zeros(1)):
        pytest.skip("this torch build has no oneDNN")
    monkeypatch.setattr(similarity, "_onednn_products", lambda rows: onednn)
    rows = torch.randn(300, 2000, generator=torch.Generator().manual_seed(5))
    out = torch.ones(300, 300)
    blocks = similarity.triangle_blocks(0, 300)
    similarity.add_products(out, rows, blocks)
    exact = 1.0 + rows.double() @ rows.double().T
    upper = np.triu(np.ones((300, 300), dtype=bool))
    assert np.allclose(out.double().numpy()[upper], exact.numpy()[upper], rtol=1e-5, atol=1e-3)


def test_reduced_precision_matmul_setting_keeps_torch_products():
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    if matmul is None or not hasattr(matmul, "fp32_precision"):
        pytest.skip("no oneDNN float32 precision setting in this torch")
    before = matmul.fp32_precision
    matmul.fp32_precision = "bf16"  # oneDNN would round float32 inputs to bfloat16
    try:
        assert not similarity._onednn_products(torch.zeros(4, 4))
    finally:
        matmul.fp32_precision = before


def test_accumulators_can_share_a_scratch_buffer():
    scratch = similarity.Scratch()
    first, second = activations(2), torch.randn(7, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    shared = [CoActivation(5, scratch=scratch), CoActivation(3, scratch=scratch)]
    alone = [CoActivation(5), CoActivation(3)]
    for a, b in zip(first.split(4), second.split(3)):
        shared[0].update(a), shared[1].update(b)
        alone[0].update(a), alone[1].update(b)
    for s, a in zip(shared, alone):
        assert np.array_equal(s.correlation(), a.correlation())


def test_zero_variance_channel_has_r_zero_and_unit_diagonal():
    corr = CoActivation(5)
    corr.update(activations())
    r = corr.correlation()
    assert corr.std()[4] == 0.0
    assert np.all(r[4, :4] == 0) and np.all(r[:4, 4] == 0) and r[4, 4] == 1.0
    assert np.allclose(np.diag(r), 1.0)


def test_copy_of_a_channel_has_r_one_and_is_its_top_similar():
    co = CoActivation(5)
    co.update(activations())
    r = co.correlation()
    assert r[0, 3] == pytest.approx(1.0, abs=1e-9)
    similar = top_similar(r, 2)
    assert similar[0][0][0] == 3 and similar[3][0][0] == 0
    assert similar[0][1][0] == 1 and similar[3][1][0] == 1


def test_chunked_update_equals_one_shot(monkeypatch):
    act = activations(1)
    whole = CoActivation(5)
    whole.update(act)
    monkeypatch.setattr(similarity, "CHUNK_ELEMENTS", 7)  # one image per chunk
    chunked = CoActivation(5)
    chunked.update(act)
    assert np.allclose(whole.correlation(), chunked.correlation(), atol=1e-6)


def test_two_dimensional_activations():
    co = CoActivation(3)
    x = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [3.0, 7.0, 0.0]])
    co.update(x)
    assert co.count == 3
    assert co.correlation()[0, 1] == pytest.approx(np.corrcoef(x[:, 0], x[:, 1])[0, 1])


def test_top_similar_excludes_self_and_breaks_ties_by_lower_channel():
    corr = np.array([[1.0, 0.5, 0.5, 0.9], [0.5, 1.0, 0.2, 0.2], [0.5, 0.2, 1.0, 0.2], [0.9, 0.2, 0.2, 1.0]])
    result = top_similar(corr, 2)
    assert result[0] == [(3, 0.9), (1, 0.5)]
    assert result[1] == [(0, 0.5), (2, 0.2)]
    assert top_similar(corr, 10)[2] == [(0, 0.5), (1, 0.2), (3, 0.2)]


def test_cross_activation_uses_dataset_scale():
    mean = np.array([0.0, 10.0, 0.0, 5.0])
    std = np.array([1.0, 10.0, 0.5, 0.0])
    # channel 0's image: raw response of channel 1 is largest, but only 1 std above its mean
    response = np.array([[9.0, 20.0, 1.0, 100.0], [0.0, 50.0, 0.25, 5.0]])
    result = cross_activation(response, [0, 1], mean, std, 2)
    assert result[0] == [(2, 2.0), (1, 1.0)]  # channel 3 has no spread: score 0
    assert result[1] == [(2, 0.5), (0, 0.0)]
    with pytest.raises(ValueError):
        cross_activation(response, [0], mean, std, 2)


def test_onednn_is_used_only_when_its_products_are_exact(monkeypatch):
    def rounds_to_bfloat16(x, w, *_args):
        return x.bfloat16().float() @ w.bfloat16().float().T

    similarity._onednn_matmul_is_exact.cache_clear()
    try:
        monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", rounds_to_bfloat16)
        assert not similarity._onednn_matmul_is_exact()
        similarity._onednn_matmul_is_exact.cache_clear()
        monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda *args: (_ for _ in ()).throw(TypeError("new signature")))
        assert not similarity._onednn_matmul_is_exact()
        similarity._onednn_matmul_is_exact.cache_clear()
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        assert not similarity._onednn_products(torch.zeros(4, 4))
    finally:
        monkeypatch.undo()
        similarity._onednn_matmul_is_exact.cache_clear()
