"""lr_find, then fit_one_cycle at the suggested rate, on scikit-learn's digits (bundled, no download).

Run:  python examples/lr_find_one_cycle.py [out_dir]
Writes out_dir/lr_find.png (the loss-vs-lr curve with the suggestion marked).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from bridge import DataBunch, Learner
from callbacks import valley

matplotlib.use("Agg")  # headless (pyplot is imported later, by the plot)
warnings.filterwarnings("ignore", ".*LeafSpec.*")
warnings.filterwarnings("ignore", ".*does not have many workers.*")


def main(out_dir: Path) -> float:
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(x))
    train, valid = perm[:1400], perm[1400:]
    data = DataBunch.from_datasets(TensorDataset(x[train], y[train]), TensorDataset(x[valid], y[valid]), bs=64)
    model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))

    def accuracy(pred: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
        return (pred.argmax(1) == targ).float().mean()

    learn = Learner(data, model, loss_func=nn.CrossEntropyLoss(), metrics=accuracy, path=out_dir,
                    accelerator="cpu", logger=False, enable_progress_bar=False)  # fmt: skip
    suggestion = learn.lr_find(num_it=60, show_plot=False, suggest_funcs=(valley,))
    print(f"suggested learning rate (valley): {suggestion.valley:.2e}")
    rec = learn.recorder
    near = min(range(len(rec.lrs)), key=lambda i: abs(rec.lrs[i] - suggestion.valley))
    fig = rec.plot_lr_find(suggestions=[(suggestion.valley, rec.losses[near])], nms=["valley"])
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "lr_find.png")
    learn.fit_one_cycle(3, lr_max=suggestion.valley)
    return float(learn.recorder.values[-1][-1])


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("lr_find_example")
    acc = main(out)
    print(f"final accuracy: {acc:.3f}; plot: {out / 'lr_find.png'}")
