"""The SASRec encoder's parts: byte dropout and attention."""

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


def test_attention_is_the_masked_softmax_product():
    torch.manual_seed(0)
    block = Block(16, 2, dropout=0.0)
    q, k, v = (torch.randn(3, 2, 7, 8) for _ in range(3))
    allowed = torch.ones(7, 7, dtype=torch.bool).tril().expand(3, 1, 7, 7)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    assert torch.allclose(block.attend(q, k, v, allowed), expected, atol=1e-5)


def test_training_and_evaluation_paths_agree_without_dropout():
    torch.manual_seed(0)
    encoder = SasrecEncoder(ModelConfig(embedding_dim=16, history_length=6, dropout=0.0))
    items, real = torch.randn(4, 6, 16), torch.rand(4, 6) > 0.3
    real[:, -1] = True
    train_out = encoder.train()(items, real)
    eval_out = encoder.eval()(items, real)
    assert torch.allclose(train_out, eval_out, atol=1e-5)
