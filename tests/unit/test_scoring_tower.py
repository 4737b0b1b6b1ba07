"""The SASRec tower as exported for scoring returns what the training-time encoder returns."""

import pytest
import torch

from recsys.config import ModelConfig
from recsys.models.two_tower.export import UserTower
from recsys.models.two_tower.model import TwoTower
from recsys.models.two_tower.scoring_tower import SasrecScoringTower

pytestmark = pytest.mark.unit


def histories(n_items: int, h: int) -> torch.Tensor:
    """Left-padded histories of every length 0..h, items drawn at random."""
    rows = []
    for n in [*range(h + 1), h, h, h]:
        row = torch.full((h,), n_items)
        row[h - n :] = torch.randint(0, n_items, (n,))
        rows.append(row)
    return torch.stack(rows)


@pytest.mark.parametrize(("heads", "blocks"), [(1, 2), (2, 2), (4, 1), (2, 3)])
def test_scoring_tower_returns_the_encoders_user_vectors(heads, blocks):
    torch.manual_seed(heads * 10 + blocks)
    n_items, h = 40, 7
    cfg = ModelConfig(item_tower="id", embedding_dim=16, num_heads=heads, num_blocks=blocks, history_length=h)
    model = TwoTower(5, n_items, cfg)
    with torch.no_grad():  # every weight away from its initial value (LayerNorm's 1 and 0 included)
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
        model.item_emb.weight[n_items].zero_()
    model.eval()
    history = histories(n_items, h)
    table = torch.cat([torch.randn(n_items, 16), torch.zeros(1, 16)])
    with torch.no_grad():
        for cut in (h, 3):  # a batch may be cut to its last columns (recsys.runtime.two_tower)
            tail = history[:, -cut:]
            want = model.user_vectors(history=tail, table=table)
            got = SasrecScoringTower(model.encoder)(tail, table)
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
        # without a table, the exported tower reads the model's own id embeddings
        torch.testing.assert_close(UserTower(model)(history), model.user_vectors(history=history),
                                   atol=2e-5, rtol=1e-5)  # fmt: skip
