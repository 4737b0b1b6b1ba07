"""The SASRec encoder's fast parts: byte dropout and the two attention paths."""

import pytest
import torch

from recsys.config import ModelConfig
from recsys.models.two_tower.encoder import Block, SasrecEncoder, dropout

pytestmark = pytest.mark.unit


def test_byte_dropout_drops_its_rate_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    out = dropout(x, 0.3, training=True)
    dropped = float((out == 0).float().mean())
    assert dropped == pytest.approx(77 / 256, abs=0.005)  # 0.3 rounded to a byte threshold
    assert float(out.mean()) == pytest.approx(1.0, abs=0.01)
    assert out.unique().tolist() == pytest.approx([0.0, 256 / 179])
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0, training=True) is x
    assert float(dropout(x, 1.0, training=True).abs().sum()) == 0.0


def test_attention_without_dropout_equals_the_written_out_product():
    torch.manual_seed(0)
    block = Block(16, 2, dropout=0.0)
    q, k, v = (torch.randn(3, 2, 7, 8) for _ in range(3))
    allowed = torch.ones(7, 7, dtype=torch.bool).tril().expand(3, 1, 7, 7)
    fast = block.attend(q, k, v, allowed)  # scaled_dot_product_attention
    weights = (q @ k.transpose(-1, -2) / 8**0.5).masked_fill(~allowed, -1e9).softmax(-1)
    assert torch.allclose(fast, weights @ v, atol=1e-5)


def test_training_and_evaluation_paths_agree_without_dropout():
    torch.manual_seed(0)
    encoder = SasrecEncoder(ModelConfig(embedding_dim=16, history_length=6, dropout=0.0))
    items, real = torch.randn(4, 6, 16), torch.rand(4, 6) > 0.3
    real[:, -1] = True
    encoder.blocks[0].drop.p = 1e-9  # takes the written-out path in training, drops nothing
    train_out = encoder.train()(items, real)
    eval_out = encoder.eval()(items, real)
    assert torch.allclose(train_out, eval_out, atol=1e-5)
