"""A tiny, dependency-free stand-in for an ML job: preprocess, train and evaluate."""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path


def preprocess(out: Path, samples: int) -> None:
    rng = random.Random(42)
    rows = []
    for _ in range(samples):
        x1, x2 = rng.gauss(0, 1), rng.gauss(0, 1)
        label = 1 if x1 + 0.5 * x2 + rng.gauss(0, 0.4) > 0 else 0
        rows.append([x1, x2, label])
    split = int(samples * 0.8)
    (out / "train.json").write_text(json.dumps(rows[:split]))
    (out / "test.json").write_text(json.dumps(rows[split:]))
    print(f"wrote {split} training and {samples - split} test rows to {out}")
    print(f"::metric samples={samples}")


def _predict(w: list[float], x1: float, x2: float) -> float:
    return 1 / (1 + math.exp(-(w[0] + w[1] * x1 + w[2] * x2)))


def train(data: Path, epochs: int, lr: float) -> None:
    rows = json.loads((data / "train.json").read_text())
    w = [0.0, 0.0, 0.0]
    loss = 0.0
    for epoch in range(1, epochs + 1):
        grad = [0.0, 0.0, 0.0]
        loss = 0.0
        for x1, x2, y in rows:
            p = _predict(w, x1, x2)
            loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
            for i, xi in enumerate((1.0, x1, x2)):
                grad[i] += (p - y) * xi
        w = [wi - lr * g / len(rows) for wi, g in zip(w, grad)]
        loss /= len(rows)
        print(f"epoch {epoch}/{epochs} loss {loss:.4f}", flush=True)
    (data / "model.json").write_text(json.dumps(w))
    print(f"::metric train_loss={loss:.4f}")


def evaluate(data: Path) -> None:
    w = json.loads((data / "model.json").read_text())
    rows = json.loads((data / "test.json").read_text())
    correct = sum(1 for x1, x2, y in rows if (_predict(w, x1, x2) > 0.5) == bool(y))
    accuracy = correct / len(rows)
    print(f"Metric - accuracy: {accuracy * 100:.2f}%")
    print(f"::metric accuracy={accuracy:.4f}")
    print("::report")
    print("| split | rows | accuracy |")
    print("| --- | ---: | ---: |")
    print(f"| test | {len(rows)} | {accuracy * 100:.2f}% |")
    print("::endreport")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("preprocess")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--samples", type=int, default=4000)
    t = sub.add_parser("train")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--lr", type=float, default=0.5)
    e = sub.add_parser("eval")
    e.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    if args.step == "preprocess":
        preprocess(args.out, args.samples)
    elif args.step == "train":
        train(args.data, args.epochs, args.lr)
    else:
        evaluate(args.data)


if __name__ == "__main__":
    main()
