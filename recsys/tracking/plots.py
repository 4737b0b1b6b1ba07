"""Training artefacts for people: PNG plots of the loss and the validation metrics per epoch."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on batch machines

import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(epochs: list[dict], folder: Path, best_epoch: int) -> list[Path]:
    """Write loss.png and valid_metrics.png from per-epoch rows; returns the written paths."""
    folder.mkdir(parents=True, exist_ok=True)
    x = [row["epoch"] for row in epochs]
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [row["loss"] for row in epochs], marker="o")
    ax.set(xlabel="epoch", ylabel="train loss (softmax CE)", title="Training loss")
    ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    ax.legend()
    paths.append(folder / "loss.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("recall_at_10", "recall_at_50", "recall_at_100", "ndcg_at_10"):
        ax.plot(x, [row[f"valid_{name}"] for row in epochs], marker=".", label=name)
    ax.axvline(best_epoch, color="grey", linestyle="--")
    ax.set(
        xlabel="epoch",
        ylabel="validation metric",
        title="Validation metrics after each epoch (train.valid_users)",
    )
    ax.legend()
    paths.append(folder / "valid_metrics.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


def plot_online(nights, path: Path) -> Path:  # noqa: ANN001 - a pandas frame of evaluated nights
    """The online metrics night by night (recsys.pipelines.evaluate's table) into ``path`` (PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    x = list(range(len(nights)))
    for name in ("hit_rate_at_10", "recall_at_10", "recall_at_100", "ndcg_at_10"):
        top.plot(x, nights[name], marker="o", label=name)
    top.set(ylabel="over users with new positives", title="How the served lists did, night by night")
    top.legend(fontsize="small")
    for name in ("coverage_at_10", "churn_at_10"):
        bottom.plot(x, nights[name], marker="o", label=name)
    bottom.set(ylabel="over all lists", xlabel="night")
    bottom.set_xticks(x, [str(n) for n in nights["night"]], rotation=45, ha="right", fontsize="small")
    bottom.legend(fontsize="small")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_replay(rows, path: Path, canary: dict | None = None, tolerance: float = 0.0) -> Path:  # noqa: ANN001 - a pandas frame of replay rows
    """Each arm's HitRate@10 and Recall@100 night by night, with their 95% intervals, into ``path``;
    with a canary scenario (recsys.pipelines.replay's record) a third panel: the canary's pooled
    HitRate@10 difference from the champion as judged each night, its interval, ``-tolerance`` and
    the decision."""
    path.parent.mkdir(parents=True, exist_ok=True)
    judged = (canary or {}).get("nights") or []
    fig, axes = plt.subplots(1, 3 if judged else 2, figsize=(16.5 if judged else 11, 4), sharex=True)
    if judged:
        _plot_canary(axes[2], canary, judged, tolerance)  # type: ignore[arg-type]
    for ax, metric in zip(axes, ("hit_rate_at_10", "recall_at_100")):
        for arm, group in rows.groupby("arm", sort=False):
            ax.plot(group["night"], group[metric], marker=".", label=arm)
            ax.fill_between(group["night"], group[f"{metric}_low"], group[f"{metric}_high"], alpha=0.2)
        ax.set(xlabel="night", ylabel=metric, title=f"{metric}, next step's positives")
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot_canary(ax, canary: dict, judged: list[dict], tolerance: float) -> None:  # noqa: ANN001 - an Axes
    def values(key: str) -> list[float]:  # a night without evidence (no users yet) is a gap
        return [float("nan") if n.get(key) is None else float(n[key]) for n in judged]

    night = [n["night"] for n in judged]
    ax.plot(night, values("hit_rate_at_10_diff"), marker="o", color="tab:purple",
            label="canary - champion (pooled)")  # fmt: skip
    low, high = values("hit_rate_at_10_diff_low"), values("hit_rate_at_10_diff_high")
    ax.fill_between(night, low, high, alpha=0.2, color="tab:purple")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.axhline(
        -tolerance, color="tab:red", linestyle="--", linewidth=0.8, label=f"-tolerance ({tolerance:g})"
    )
    decision = canary.get("decision")
    if decision:
        ax.axvline(
            decision["night"], color="black", linestyle=":", label=decision["action"].replace("_", " ")
        )
    started = canary.get("started", {})
    ax.set(xlabel="night", ylabel="HitRate@10 difference, 95% interval",
           title=f"canary v{started.get('version', '?')} ({canary['scenario']['kind']}) from night "
                 f"{started.get('night', '?')}")  # fmt: skip
    ax.legend(fontsize="small")


def plot_time_to_quality(curves: dict[str, list[list[list[float]]]], path: Path, dataset: str) -> Path:
    """Validation NDCG@10 against minutes of training, one colour per variant, one line per seed
    (``curves``: variant -> per seed, [minutes, NDCG@10] after each epoch) into ``path`` (PNG)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, runs) in enumerate(curves.items()):
        for j, run in enumerate(runs):
            x, y = zip(*run, strict=True) if run else ((), ())
            ax.plot(x, y, color=f"C{i}", alpha=0.8, linewidth=1.2, label=name if j == 0 else None)
    ax.set(xlabel="minutes of training (epochs and their validation)", ylabel="validation NDCG@10",
           title=f"Time to quality ({dataset})")  # fmt: skip
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
