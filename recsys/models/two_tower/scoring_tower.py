"""The SASRec user tower as exported for nightly scoring: the encoder's function at the last
position, restated in the ops ONNX Runtime runs fastest on a CPU (benchmarks/speed.py measures it).

Same weights, same float32 arithmetic up to rounding order (tests/unit/test_scoring_tower.py checks
it against :meth:`TwoTower.user_vectors`); what changes is the graph:

- The linear layers read 2-D ``[B * H, D]`` rows, so ONNX Runtime fuses each MatMul with its bias
  into one Gemm; with one head, nothing is transposed.
- Q, K and V are three Gemms (no split copy), the 1/sqrt(d) scale folded into Q's weights.
- The mask is one additive bias, ``causal [H, H] + padding [B, 1, H]``, built once and shared by
  the blocks, instead of a boolean mask filled per block.
- The last block needs its last position only, and its keys and values never get projected:
  ``q . (W_k a_j + b_k) = (W_k^T q) . a_j + q . b_k``, and the second term is the same for every
  key, so softmax ignores it; the weights sum to 1, so ``sum_j w_j (W_v a_j + b_v) = W_v (sum_j
  w_j a_j) + b_v``. That removes a [B * H, D] x [D, 2D] product from every call.
- Each logit is raised to at least its row's maximum - 80 before the Softmax: ONNX Runtime's
  Softmax takes 8x longer on a row with masked entries (its exp slows down where the result
  underflows). A masked weight is then exp(-80) ~ 2e-35 of the row's largest instead of 0, lost
  in float32 rounding. A softmax written out (max, exp, sum) was as fast, but its sum's rounding
  depended on how many padding columns a batch kept, so a user's list could differ in the last
  bit between a full night and an incremental one; ONNX Runtime's Softmax does not.
- Padding positions are not zeroed between blocks: the bias masks them as keys (their weight is
  at most exp(-80) of the largest), and only the last position is read out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.models.two_tower.encoder import Block, SasrecEncoder

_MASKED = -1e9  # added to a masked logit
_EXP_FLOOR = -80.0  # softmax's exponents raised to this: exp(-80) is tiny, but not subnormal


def softmax(logits: Tensor) -> Tensor:
    """Softmax over the last axis, exponents below :data:`_EXP_FLOOR` raised to it."""
    floor = logits.amax(dim=-1, keepdim=True) + _EXP_FLOOR
    return torch.maximum(logits, floor).softmax(dim=-1)


class SasrecScoringTower(nn.Module):
    """history [B, H] (left-padded with the table's last row) and item_table [M + 1, D] -> [B, D]:
    what ``SasrecEncoder(table[history], real, last_only=True)[:, -1]`` returns."""

    def __init__(self, encoder: SasrecEncoder) -> None:
        super().__init__()
        self.encoder = encoder.eval()

    def forward(self, history: Tensor, table: Tensor) -> Tensor:
        b, h = history.shape
        d = table.shape[1]
        real = history != table.shape[0] - 1
        x = (table[history] * math.sqrt(d) + self.encoder.position.weight[-h:]).reshape(b * h, d)
        causal = torch.ones(h, h, dtype=torch.bool, device=history.device).tril()
        causal_bias = torch.zeros(h, h, device=table.device).masked_fill(~causal, _MASKED)
        key_bias = torch.zeros(b, 1, h, device=table.device).masked_fill(~real.unsqueeze(1), _MASKED)
        bias = (key_bias + causal_bias).unsqueeze(1)  # [B, 1, H, H]: one row per query
        blocks = [block for block in self.encoder.blocks if isinstance(block, Block)]
        for block in blocks[:-1]:
            x = self._block(block, x, bias, b, h)
        y = self._last_block(blocks[-1], x.view(b, h, d), key_bias)
        return self.encoder.norm(y * real[:, -1:].to(y.dtype))

    @staticmethod
    def _projections(block: Block) -> tuple[tuple[Tensor, Tensor], ...]:
        """(weight, bias) of Q (scaled by 1/sqrt(head dim)), K and V."""
        d = block.out.weight.shape[0]
        scale = 1.0 / math.sqrt(d // block.heads)
        (wq, wk, wv), (bq, bk, bv) = block.qkv.weight.split(d), block.qkv.bias.split(d)
        return (wq * scale, bq * scale), (wk, bk), (wv, bv)

    @staticmethod
    def _feed_forward(block: Block, x: Tensor) -> Tensor:
        first, last = block.ffn[0], block.ffn[3]
        assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
        hidden = F.gelu(F.linear(block.norm2(x), first.weight, first.bias))
        return x + F.linear(hidden, last.weight, last.bias)

    def _block(self, block: Block, x: Tensor, bias: Tensor, b: int, h: int) -> Tensor:
        """A block at every position: x [B * H, D] -> [B * H, D]."""
        d, heads = x.shape[1], block.heads
        a = block.norm1(x)
        q, k, v = (F.linear(a, w, c).view(b, h, heads, d // heads) for w, c in self._projections(block))
        if heads == 1:
            q, k, v = q.squeeze(2).unsqueeze(1), k.squeeze(2).unsqueeze(1), v.squeeze(2).unsqueeze(1)
        else:
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, H, dh]
        weights = softmax(q @ k.transpose(-1, -2) + bias)
        attended = weights @ v
        attended = attended.squeeze(1) if heads == 1 else attended.transpose(1, 2)
        x = x + F.linear(attended.reshape(b * h, d), block.out.weight, block.out.bias)
        return self._feed_forward(block, x)

    def _last_block(self, block: Block, x: Tensor, key_bias: Tensor) -> Tensor:
        """The last block at the last position, keys and values unprojected: x [B, H, D] -> [B, D]."""
        b, _, d = x.shape
        heads, dh = block.heads, d // block.heads
        a = block.norm1(x)  # [B, H, D]
        (wq, bq), (wk, _), (wv, bv) = self._projections(block)
        q = F.linear(a[:, -1], wq, bq).view(b, heads, 1, dh)
        u = q @ wk.view(heads, dh, d)  # [B, heads, 1, D]: W_k^T q per head
        logits = u @ a.unsqueeze(1).transpose(-1, -2) + key_bias.unsqueeze(1)  # [B, heads, 1, H]
        mixed = softmax(logits) @ a.unsqueeze(1)  # [B, heads, 1, D]: sum_j w_j a_j
        attended = (mixed @ wv.view(heads, dh, d).transpose(-1, -2)).reshape(b, d) + bv
        y = x[:, -1] + F.linear(attended, block.out.weight, block.out.bias)
        return self._feed_forward(block, y)
