"""PPO's curves: ``training_curve.png`` (the file every align output has) with four panels: reward,
KL to the reference (and its coefficient), the losses, and entropy / clip fraction / approximate KL."""

from __future__ import annotations

from pathlib import Path

from align.card import CURVE

PANELS = (("reward", ("reward_mean", "rlhf_reward")), ("KL to the reference", ("kl",)),
          ("loss", ("policy_loss", "value_loss")), ("policy", ("entropy", "clipfrac", "approx_kl")))


def plot_curves(history: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.5 * len(PANELS), 3.5), squeeze=False)
    for ax, (title, keys) in zip(axes[0], PANELS, strict=True):
        for key in keys:
            points = [(h["step"], h[key]) for h in history if isinstance(h.get(key), int | float)]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if len(points) < 30 else None, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle("rlaif align ppo")
    fig.tight_layout()
    fig.savefig(out / CURVE, dpi=100)
    plt.close(fig)
