"""The two-tower's training losses: full and sampled softmax, on one fused cross-entropy.

:func:`softmax_cross_entropy` never holds the [Q, C] logits: it walks the queries in chunks whose
logits fit the CPU's cache, and while a chunk is there turns its logits into the loss and into the
gradients, (softmax - one-hot) times the columns and the queries (as fused linear cross-entropy
kernels do): one product for the logits, two for the gradients, no second pass. At the sample's shape the
unfused loss (matmul, /temperature, -logQ, masks, cat, log-softmax, each a pass over tens of MB)
was over half of a training step (benchmarks/training.py). With ``dtype=torch.bfloat16`` the
products run in bfloat16 (AMX / AVX512-BF16 on CPU, tensor cores on GPU), the rest in float32.
"""

from __future__ import annotations

import math
import typing

import torch
import torch.nn.functional as F
from torch import Tensor

if typing.TYPE_CHECKING:
    from recsys.models.two_tower.model import TwoTower

CHUNK_LOGITS = 1 << 20  # logits per chunk: 4 MiB of float32 (fastest of 2^16..2^22 on a 2-core Xeon)
CUDA_CHUNK_LOGITS = 1 << 26  # on a GPU: few large launches (256 MiB of float32)


def _chunk_logits(
    q: Tensor, cols: Tensor, bias: Tensor | None, target: Tensor, shift: Tensor | None
) -> Tensor:
    """Float32 logits of one chunk of queries: q @ cols.T + bias, plus ``shift`` at each row's target."""
    logits = (q @ cols.T).float()
    if bias is not None:
        logits += bias
    if shift is not None:
        logits[torch.arange(len(q), device=q.device), target] += shift
    return logits


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and, in the same pass over each chunk, the gradients for an
    upstream gradient of 1 (softmax - one-hot, over n); backward only scales them."""

    @staticmethod
    def forward(ctx, queries, columns, target, bias, shift, dtype):  # noqa: ANN001, ANN205
        q, cols = queries.detach().to(dtype), columns.detach().to(dtype)
        budget = CHUNK_LOGITS if q.device.type == "cpu" else CUDA_CHUNK_LOGITS
        n, chunk = len(q), max(1, budget // max(len(cols), 1))
        grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        d_q = torch.empty(q.shape, dtype=torch.float32, device=q.device) if grads else None
        d_cols = torch.zeros(cols.shape, dtype=torch.float32, device=q.device) if grads else None
        total = torch.zeros((), dtype=torch.float64, device=q.device)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            rows = torch.arange(e - s, device=q.device)
            logits = _chunk_logits(q[s:e], cols, bias, target[s:e], None if shift is None else shift[s:e])
            top = logits.amax(dim=1, keepdim=True)
            right = logits[rows, target[s:e]]
            p = logits.sub_(top).exp_()  # in place: the logits are not needed again
            mass = p.sum(dim=1, keepdim=True)
            total += (mass.log() + top - right.unsqueeze(1)).sum()
            if grads:
                p.div_(mass * n)
                p[rows, target[s:e]] -= 1.0 / n
                p_low = p.to(dtype)
                d_q[s:e] = p_low @ cols  # type: ignore[index]
                d_cols += (p_low.T @ q[s:e]).float()  # type: ignore[operator]
        ctx.save_for_backward(d_q, d_cols)
        ctx.in_dtype = (queries.dtype, columns.dtype)
        return (total / n).float()

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        d_q, d_cols = ctx.saved_tensors
        return (grad * d_q).to(ctx.in_dtype[0]), (grad * d_cols).to(ctx.in_dtype[1]), None, None, None, None


def softmax_cross_entropy(
    queries: Tensor,
    columns: Tensor,
    target: Tensor,
    bias: Tensor | None = None,
    shift: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Mean cross-entropy of ``queries`` [Q, D] over ``columns`` [C, D]: logits = q @ c.T + bias [C],
    row i's right answer at column ``target[i]``, whose logit gets ``shift[i]`` added (a row's own
    correction of a shared column). Products in ``dtype``; gradients for queries and columns.
    """
    bias = None if bias is None else bias.detach().float()
    shift = None if shift is None else shift.detach().float()
    return typing.cast(Tensor, _SoftmaxCrossEntropy.apply(queries, columns, target, bias, shift, dtype))


def merge_columns(columns: Tensor, bias: Tensor, n_rows: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sampled softmax columns made distinct, with the same loss.

    ``columns`` [C] items with ``bias`` [C] (-logQ); the first ``n_rows`` are the rows' own
    targets (in-batch). Each row sees its own target's column once and every other copy of it
    masked; each other item's copies all count. So one column per distinct item, with bias
    log(sum of exp(bias) of its copies), and each row's target logit shifted back to its own
    copy's bias. Returns (distinct items [M], their bias [M], each row's target column [Q], shift [Q]).
    """
    distinct, where = torch.unique(columns, return_inverse=True)
    weight = torch.zeros(len(distinct), dtype=torch.float64, device=columns.device)
    merged = weight.index_add_(0, where, bias.double().exp()).log().float()
    target = where[:n_rows]
    return distinct, merged, target, bias[:n_rows] - merged[target]


def full_softmax_loss(
    model: TwoTower,
    queries: Tensor,
    targets: Tensor,
    teacher: Tensor | None = None,
    distill_weight: float = 0.0,
    distill_temperature: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Cross-entropy over the whole catalogue: queries [Q, D], targets [Q] -> scalar.

    Negatives without a trained id (``model.tail_negatives`` of the content tower) are extra
    columns no target points at, each standing for log(E / S) of the untrained movies.
    With a ``teacher`` [Q, N] (e.g. EASE scores of the same prefix; -inf for items it rules out),
    adds ``distill_weight`` x KL(softmax(teacher / distill_temperature) || softmax(logits)).
    EASE scores span about [-0.2, 1.2], so the temperature must be low (0.05: entropy ~5.6 nats
    over 1,956 items, against 7.6 for uniform) for the teacher to say more than "uniform".
    """
    queries = queries / model.cfg.temperature
    columns, bias = model.item_vectors(), None
    tail = model.negative_vectors(model.cfg.tail_negatives)
    if tail is not None:
        n = len(columns)
        columns = torch.cat([columns, tail[0]])
        bias = torch.zeros(len(columns), device=columns.device)
        bias[n:] = tail[1]
    if teacher is None or distill_weight <= 0:
        return softmax_cross_entropy(queries, columns, targets, bias, dtype=dtype)
    logits = queries @ columns.T + (0.0 if bias is None else bias)
    loss = F.cross_entropy(logits, targets)
    if teacher.shape[1] < logits.shape[1]:  # the teacher never scores the extra negatives
        teacher = F.pad(teacher, (0, logits.shape[1] - teacher.shape[1]), value=float("-inf"))
    soft = (teacher / distill_temperature).softmax(dim=1)
    log_p = logits.log_softmax(dim=1)
    # sum p_t (log p_t - log q) over the teacher's support (p_t = 0 contributes nothing)
    kl = torch.where(soft > 0, soft * (soft.clamp_min(1e-30).log() - log_p), 0.0).sum(dim=1)
    return loss + distill_weight * kl.mean()


def sampled_softmax_loss(
    model: TwoTower,
    queries: Tensor,
    targets: Tensor,
    sampled: Tensor | None = None,
    sampled_log_q: Tensor | None = None,
    hard: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sampled softmax: in-batch targets + shared catalogue negatives + per-row hard negatives.

    queries [Q, D], targets [Q]; sampled [M] with ``sampled_log_q`` [M] = log of each sample's
    probability under the sampling distribution; hard [Q, R] (pad = n_items, ignored).
    logQ correction (``model.cfg.logq_correction``) subtracts log(expected count among the
    negatives) of each in-batch and sampled column; hard negatives are chosen, not sampled, and
    are left uncorrected. Another row's positive equal to a row's own target is masked.
    """
    queries = queries / model.cfg.temperature
    columns = targets if sampled is None else torch.cat([targets, sampled])
    bias = None
    if model.cfg.logq_correction:
        item_log_prob = typing.cast(Tensor, model.item_log_prob)  # a registered buffer
        log_q = item_log_prob[targets] + math.log(len(targets))
        if sampled is not None:
            assert sampled_log_q is not None
            log_q = torch.cat([log_q, sampled_log_q + math.log(len(sampled))])
        bias = -log_q
    own = torch.arange(len(targets), device=targets.device)
    if hard is None:
        each = bias if bias is not None else torch.zeros(len(columns), device=columns.device)
        distinct, merged, target, shift = merge_columns(columns, each, len(targets))
        return softmax_cross_entropy(queries, model.item_vectors(distinct), target, merged, shift, dtype)
    logits = queries @ model.item_vectors(columns).T + (0.0 if bias is None else bias)
    clash = (targets.unsqueeze(1) == columns.unsqueeze(0)) & (own.unsqueeze(1) != torch.arange(
        len(columns), device=targets.device).unsqueeze(0))  # fmt: skip
    logits = logits.masked_fill(clash, float("-inf"))
    hard_logits = (queries.unsqueeze(1) * model.item_vectors(hard)).sum(-1)
    invalid = (hard == targets.unsqueeze(1)) | (hard == model.n_items)
    logits = torch.cat([logits, hard_logits.masked_fill(invalid, float("-inf"))], dim=1)
    return F.cross_entropy(logits, own)
