"""The content part of the two-tower's item tower: a movie's features -> a vector.

Reads what recsys.data.features encodes (genres, decade, release year, title words, tags), so a
movie the model never trained gets a vector from its features alone; recsys.models.two_tower.model
adds the id embedding of a trained movie to it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recsys.data.features import DECADES, FEATURE_INPUTS, ItemFeatures, Vocabulary

CONTENT = FEATURE_INPUTS  # ContentEncoder's inputs, in order


def content_tensors(features: ItemFeatures) -> list[Tensor]:
    """:data:`CONTENT` of ``features`` as the encoder reads them."""
    return [torch.as_tensor(a) for a in features.arrays()]


def example_features(vocabulary: Vocabulary, n: int) -> list[Tensor]:
    """:data:`CONTENT` of ``n`` made-up movies: the example inputs of an ONNX export."""
    import pandas as pd

    movies = pd.DataFrame({"title": ["Example (1999)"] * n, "genres": ["Drama"] * n, "tags": [""] * n})
    return content_tensors(vocabulary.encode(movies))


class ContentEncoder(nn.Module):
    """Movie features -> [M, D]: genre projection + decade embedding + a linear release-year
    direction + mean title-word and mean tag embeddings, then a residual MLP (so genres, era and
    words can interact)."""

    def __init__(self, vocabulary: Vocabulary, dim: int) -> None:
        super().__init__()
        self.genre_proj = nn.Linear(max(len(vocabulary.genres), 1), dim, bias=False)
        self.decade_emb = nn.Embedding(len(DECADES) + 1, dim)
        self.word_emb = nn.Embedding(len(vocabulary.words) + 1, dim, padding_idx=0)
        self.tag_emb = nn.Embedding(len(vocabulary.tags) + 1, dim, padding_idx=0)
        for emb in (self.decade_emb, self.word_emb, self.tag_emb):
            nn.init.normal_(emb.weight, std=0.05)
        self.year_proj = nn.Linear(1, dim, bias=False)
        nn.init.normal_(self.genre_proj.weight, std=0.05)
        nn.init.normal_(self.year_proj.weight, std=0.05)
        with torch.no_grad():
            self.word_emb.weight[0].zero_()
            self.tag_emb.weight[0].zero_()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    @staticmethod
    def _mean(emb: nn.Embedding, ids: Tensor) -> Tensor:
        count = (ids > 0).sum(dim=1, keepdim=True).clamp(min=1).to(emb.weight.dtype)
        return emb(ids).sum(dim=1) / count

    def forward(self, genres: Tensor, decade: Tensor, words: Tensor, tags: Tensor, year: Tensor) -> Tensor:
        x = self.genre_proj(genres) + self.decade_emb(decade) + self.year_proj(year)
        x = x + self._mean(self.word_emb, words) + self._mean(self.tag_emb, tags)
        return x + self.mlp(x)
