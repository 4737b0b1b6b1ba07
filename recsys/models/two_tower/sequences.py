"""Users' positives as model inputs: left-padded histories and the training examples built from them.

Every history is ``[H]`` item indices, oldest first, left-padded with ``pad`` (= n_items), so the
last column is always the most recent positive - the layout of recsys.models.two_tower.model's history towers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys.data.prepared import left_pad
from recsys.data.views import group_by_user


def build_histories(pairs: np.ndarray, n_users: int, n_items: int, length: int) -> torch.Tensor:
    """Each user's last ``length`` items from time-ordered (user_idx, item_idx) rows -> [n_users, length]."""
    return torch.from_numpy(left_pad(group_by_user(pairs[:, 0], pairs[:, 1], n_users), length, n_items))


@dataclass
class Examples:
    """One epoch's material: inputs/targets per example and the user each belongs to.

    History towers: inputs [W, H] windows, targets [W, H] (the next positive at each position,
    ``pad`` where there is none). Id tower: inputs [W] user_idx, targets [W] item_idx.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    users: torch.Tensor  # [W] user_idx
    n_targets: torch.Tensor  # [W] predicted positives per example
    before: list[np.ndarray] | None = None  # per window: the user's items before its inputs
    teacher_base: torch.Tensor | None = None  # [W, N] teacher scores of ``before``
    before_mask: torch.Tensor | None = None  # [W, N] bool: items in ``before``

    def attach_teacher_base(self, teacher: torch.Tensor) -> None:
        """Sum of the teacher rows [N + 1, N] of each window's earlier items (distillation)."""
        if self.before is None:
            raise ValueError("teacher bases need window examples")
        n = teacher.shape[1]
        base = torch.zeros(len(self.before), n)
        mask = torch.zeros(len(self.before), n, dtype=torch.bool)
        for row, items in enumerate(self.before):
            if len(items):
                index = torch.as_tensor(items, dtype=torch.long)
                base[row] = teacher[index].sum(0)
                mask[row, index] = True
        self.teacher_base, self.before_mask = base, mask


def window_examples(pairs: np.ndarray, n_items: int, length: int) -> Examples:
    """Windows covering each user's whole sequence, cut from its end, each target predicted once.

    ``pairs``: (user_idx, item_idx) rows sorted by user, time-ordered within a user.
    A window ending at e predicts items [max(1, e-H), e) from the items one step earlier.
    """
    inputs, targets, users, before = [], [], [], []
    n_users = int(pairs[:, 0].max()) + 1 if len(pairs) else 0
    for user, seq in enumerate(group_by_user(pairs[:, 0], pairs[:, 1], n_users)):
        end = len(seq)
        while end > 1:
            start = max(1, end - length)
            inputs.append(seq[start - 1 : end - 1])
            targets.append(seq[start:end])
            users.append(user)
            before.append(seq[: start - 1])
            end = start
    ins, outs = left_pad(inputs, length, n_items), left_pad(targets, length, n_items)
    return Examples(
        torch.from_numpy(ins),
        torch.from_numpy(outs),
        torch.as_tensor(users, dtype=torch.long),
        torch.as_tensor([len(t) for t in targets], dtype=torch.long),
        before,
    )


def id_examples(pairs: np.ndarray) -> Examples:
    """One example per (user_idx, item_idx) pair, for the id tower."""
    users = torch.as_tensor(pairs[:, 0], dtype=torch.long)
    return Examples(
        users, torch.as_tensor(pairs[:, 1], dtype=torch.long), users, torch.ones(len(pairs), dtype=torch.long)
    )
