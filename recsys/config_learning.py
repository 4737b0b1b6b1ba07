"""The two-tower's settings sections (recsys.config.Settings.model and .train): the architecture,
the loss, and how training runs - optimiser, budget, hardware and precision."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recsys.config_base import Section as _Section

HISTORY_TOWERS = ("sasrec", "mean")  # user towers that read a history (no user index needed)


class ModelConfig(_Section):
    embedding_dim: int = Field(64, ge=1)
    # sasrec: self-attention over the recent positives; mean: their mean; id: a user-id embedding
    user_tower: Literal["sasrec", "mean", "id"] = "sasrec"
    history_length: int = Field(50, ge=1)  # recent positives the history towers read
    # id: item-id embedding; content: + genres, year, title words, tags (new movies get a vector)
    item_tower: Literal["id", "content"] = "content"  # chosen on validation under both protocols
    id_dropout: float = Field(0.25, ge=0.0, le=1.0)  # content: share of item ids hidden per step
    content_min_count: int = Field(2, ge=1)  # content: words and tags of >= this many movies
    tail_negatives: int = Field(1024, ge=0)  # content, full softmax: untrained movies per step, as negatives
    num_blocks: int = Field(2, ge=1)  # sasrec: pre-LN transformer blocks
    num_heads: int = Field(1, ge=1)  # sasrec: attention heads (embedding_dim must divide by it)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)  # sasrec: on embeddings, attention and FFN
    temperature: float = Field(1.0, gt=0.0)  # logits = dot / temperature
    # full: over the whole catalogue; sampled: in-batch + catalogue negatives; auto: full up to max
    softmax: Literal["auto", "full", "sampled"] = "auto"
    # 30,000 takes in ML-20M (15,609 trained movies at its generated shape): under a 30-minute budget
    # the full softmax reached valid NDCG@10 0.0689 there, the sampled one 0.0645 (issue 22)
    full_softmax_max_items: int = Field(30_000, ge=2)
    logq_correction: bool = True  # sampled: subtract log(expected count) of each negative source
    num_sampled_negatives: int = Field(256, ge=0)  # sampled: catalogue negatives per batch
    negative_distribution: Literal["uniform", "popularity"] = "uniform"  # popularity: ~ count^0.75

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> ModelConfig:
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                f"embedding_dim {self.embedding_dim} is not divisible by num_heads {self.num_heads}"
            )
        return self


class TrainConfig(_Section):
    max_epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=2)  # per step: sequences (history towers) or pairs (id tower)
    learning_rate: float = Field(2e-3, gt=0.0)  # chosen on validation (benchmarks/results/sweep-*)
    weight_decay: float = Field(0.0, ge=0.0)
    max_interactions: int = Field(1_000_000, ge=1)  # predicted positives per epoch, sampled afresh
    max_minutes: float = Field(0.0, ge=0.0)  # stop after the epoch that spends it; 0 = no limit
    patience: int = Field(10, ge=1)  # epochs without validation NDCG@10 gain before stopping
    seed: int = 42
    threads: int = Field(0, ge=0)  # torch intra-op threads; 0 = leave torch's default
    # auto: CUDA when torch sees a GPU, else the CPU. Export and nightly scoring stay on the CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bfloat16: the loss's products in bfloat16 (recsys.models.two_tower.loss); auto: bfloat16 where
    # the device computes it natively (CPU: AMX or AVX512-BF16; CUDA: compute capability >= 8)
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # users judged after each epoch, a fixed random sample (0 = all); the chosen epoch's model is
    # judged again on all of them at the end. 10,000: a validation pass at ML-20M size costs 5.5 s,
    # not 34 s for all 138k users (benchmarks/results/training.json); every user of the sample
    valid_users: int = Field(10_000, ge=0)
    progress_bar: bool = True
    eval_batch_size: int = Field(1024, ge=1)  # users per scoring batch during evaluation
    # Hard negatives (sampled softmax): items of the current champion's list for the user, below
    # its top hard_negative_skip (false negatives live at the very top), down to position
    # hard_negative_pool. hard_negative_ratio of num_sampled_negatives are hard, the rest naive.
    hard_negative_ratio: float = Field(0.0, ge=0.0, le=1.0)
    hard_negative_skip: int = Field(20, ge=0)
    hard_negative_pool: int = Field(100, ge=1)
    # Distillation (full softmax): KL from EASE's scores (the teacher) added to the label loss.
    distill_weight: float = Field(0.0, ge=0.0)
    distill_temperature: float = Field(0.05, gt=0.0)  # teacher softmax temperature (EASE scale)
    distill_ease_l2: float = Field(30.0, gt=0.0)  # the teacher's ridge penalty
