"""Which arm serves a user: the champion, or the canary's slice of users. Pure logic, no I/O.

A user is in the canary's slice when a salted 64-bit hash of its id, read as a fraction in [0, 1),
is below the canary's share. The hash is splitmix64 of (user id XOR the first 8 bytes of the salt's
SHA-256): it depends on the id and the salt only, so the slice is the same every night, in every
process and on every machine (Python's ``hash()`` is salted per process). Raising the share keeps
every user already in the slice and adds others; a new salt draws a new slice. The salt and the
share are recorded on the canary's MLflow version (recsys.tracking.canary), and :class:`Arms` travels
in the night's plan, so every shard assigns the same users.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CHAMPION_ARM, CANARY_ARM = "champion", "canary"
MAX_SHARE = 0.5  # a canary serves a minority of users; beyond that it is a promotion
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def check_share(share: Any) -> float:
    """``share`` as a float in (0, MAX_SHARE]; ValueError naming it otherwise."""
    try:
        value = float(share)
    except (TypeError, ValueError):
        raise ValueError(f"canary share must be a number in (0, {MAX_SHARE}], got {share!r}") from None
    if not 0 < value <= MAX_SHARE:
        raise ValueError(f"canary share must be in (0, {MAX_SHARE}], got {share!r}")
    return value


def _salt64(salt: str) -> np.uint64:
    return np.frombuffer(hashlib.sha256(salt.encode("utf-8")).digest()[:8], dtype="<u8")[0]


def buckets(user_ids: np.ndarray, salt: str) -> np.ndarray:
    """Each user's place in [0, 1) (float64, shape of ``user_ids``): splitmix64 of id XOR salt."""
    x = np.asarray(user_ids, dtype=np.int64).view(np.uint64) ^ _salt64(salt)
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class Arms:
    """The versions serving tonight: ``champion`` for everyone but the canary's slice, ``canary``
    (None: no canary) for the users whose bucket is below ``share``."""

    champion: str
    canary: str | None = None
    share: float = 0.0
    salt: str = ""

    def __post_init__(self) -> None:
        if self.canary is not None:
            check_share(self.share)
            if not self.salt:
                raise ValueError("a canary needs a salt")
            if self.canary == self.champion:
                raise ValueError(f"version {self.canary} is the champion: it cannot also be the canary")

    def in_canary(self, user_ids: np.ndarray) -> np.ndarray:
        """bool per user (shape of ``user_ids``): served by the canary."""
        if self.canary is None:
            return np.zeros(np.shape(user_ids), dtype=bool)
        return buckets(user_ids, self.salt) < self.share

    def assign(self, user_ids: np.ndarray) -> np.ndarray:
        """Each user's arm name (object array, shape of ``user_ids``)."""
        return np.where(self.in_canary(user_ids), CANARY_ARM, CHAMPION_ARM).astype(object)

    def versions(self) -> dict[str, str]:
        """arm -> model version, champion first."""
        out = {CHAMPION_ARM: self.champion}
        if self.canary is not None:
            out[CANARY_ARM] = self.canary
        return out

    @property
    def label(self) -> str:
        """Folder name of the night's lists: ``3``, or ``3+canary5`` with a canary."""
        return self.champion if self.canary is None else f"{self.champion}+canary{self.canary}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, champion: str | None = None) -> Arms:
        """From :meth:`as_dict`; None (a plan or record from before arms): ``champion`` alone."""
        if not data:
            if champion is None:
                raise ValueError("no arms recorded and no champion version given")
            return cls(str(champion))
        canary = data.get("canary")
        return cls(
            str(data["champion"]),
            None if canary is None else str(canary),
            float(data.get("share") or 0.0),
            str(data.get("salt") or ""),
        )
