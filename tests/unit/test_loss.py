"""The fused cross-entropy of recsys.models.two_tower.loss against the plain statement of each loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from recsys.config import ModelConfig
from recsys.models.two_tower import loss as L
from recsys.models.two_tower.model import TwoTower

pytestmark = pytest.mark.unit


def _inputs(q=37, c=23, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randn(q, d, generator=gen, requires_grad=True)
    columns = torch.randn(c, d, generator=gen, requires_grad=True)
    target = torch.randint(0, c, (q,), generator=gen)
    bias, shift = torch.randn(c, generator=gen), torch.randn(q, generator=gen)
    return queries, columns, target, bias, shift


def _plain(queries, columns, target, bias, shift):
    logits = queries @ columns.T + bias
    logits = logits + F.one_hot(target, len(columns)) * shift.unsqueeze(1)
    return F.cross_entropy(logits, target)


@pytest.mark.parametrize("chunk", [1 << 20, 64])  # one chunk; several, the last one short
def test_fused_cross_entropy_equals_the_plain_one_with_its_gradients(monkeypatch, chunk):
    monkeypatch.setattr(L, "CHUNK_LOGITS", chunk)
    queries, columns, target, bias, shift = _inputs()
    fused = L.softmax_cross_entropy(queries, columns, target, bias, shift)
    grads = torch.autograd.grad(fused * 3.0, [queries, columns])  # an upstream gradient != 1
    plain = _plain(queries, columns, target, bias, shift)
    expected = torch.autograd.grad(plain * 3.0, [queries, columns])
    assert float(fused) == pytest.approx(float(plain), rel=1e-6)
    for got, want in zip(grads, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def test_bfloat16_products_stay_close_to_float32():
    queries, columns, target, bias, _ = _inputs(q=200, c=300, d=16)
    exact = L.softmax_cross_entropy(queries, columns, target, bias)
    low = L.softmax_cross_entropy(queries, columns, target, bias, dtype=torch.bfloat16)
    assert float(low) == pytest.approx(float(exact), rel=2e-2)
    g_exact = torch.autograd.grad(exact, queries)[0]
    g_low = torch.autograd.grad(low, queries)[0]
    assert F.cosine_similarity(g_exact.flatten(), g_low.flatten(), dim=0) > 0.99


def test_merged_columns_give_the_per_copy_sampled_softmax():
    """Each row: its own in-batch column, every other copy of its target masked, every copy of
    another item counted with its own -logQ - the loss before the columns were merged."""
    model = TwoTower(4, 9, ModelConfig(item_tower="id", embedding_dim=6, user_tower="id"))
    model.item_log_prob = torch.log_softmax(torch.randn(9), 0)
    targets = torch.tensor([1, 1, 3, 5, 1, 3])
    sampled, log_q_s = torch.tensor([1, 2, 2, 7]), torch.log(torch.full((4,), 1 / 9))
    queries = torch.randn(len(targets), 6, requires_grad=True)
    fused = L.sampled_softmax_loss(model, queries, targets, sampled, log_q_s)
    columns = torch.cat([targets, sampled])
    log_q = torch.cat([model.item_log_prob[targets] + math.log(6), log_q_s + math.log(4)])
    logits = queries @ model.item_vectors(columns).T - log_q
    own = torch.arange(len(targets))
    clash = (targets[:, None] == columns[None, :]) & (own[:, None] != torch.arange(len(columns))[None, :])
    plain = F.cross_entropy(logits.masked_fill(clash, float("-inf")), own)
    assert float(fused) == pytest.approx(float(plain), rel=1e-5)
    g_fused, g_plain = (torch.autograd.grad(x, queries)[0] for x in (fused, plain))
    assert torch.allclose(g_fused, g_plain, atol=1e-5)


def test_no_gradients_are_computed_without_grad():
    queries, columns, target, bias, shift = _inputs()
    with torch.no_grad():
        value = L.softmax_cross_entropy(queries, columns, target, bias, shift)
    assert float(value) == pytest.approx(float(_plain(queries, columns, target, bias, shift)), rel=1e-6)
