"""Train a small model and track it on an authenticated MLflow server.

The script knows nothing about credentials: MLflow's request-auth plugin supplies them. With
leaseline they come from Vault/OpenBao on every request and survive a password rotation mid-run::

    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
    export MLFLOW_TRACKING_AUTH=leaseline
    export LEASELINE_MLFLOW_USERNAME=trainer
    export LEASELINE_MLFLOW_PASSWORD=vault://secret/mlflow/trainer#password
    python examples/mlflow/train.py --experiment churn --epochs 5

``--pause`` waits for a line on stdin after each epoch, so you can rotate the password (on the
server and in Vault) between two ``log_metric`` calls and watch the run carry on.
"""

from __future__ import annotations

import argparse
import sys

import mlflow
import numpy as np
import sklearn
from mlflow.models import infer_signature
from sklearn.linear_model import SGDRegressor


def make_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(512, 4))
    y = x @ np.array([1.5, -2.0, 0.5, 3.0]) + rng.normal(scale=0.1, size=512)
    return x, y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="leaseline-example")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pause", action="store_true", help="wait for Enter after each epoch")
    args = parser.parse_args(argv)

    x, y = make_data(args.seed)
    model = SGDRegressor(learning_rate="constant", eta0=args.learning_rate, random_state=args.seed)
    mlflow.set_experiment(args.experiment)
    with mlflow.start_run() as run:
        print(f"run {run.info.run_id}", flush=True)
        mlflow.log_params(
            {"epochs": args.epochs, "learning_rate": args.learning_rate, "seed": args.seed}
        )
        for epoch in range(args.epochs):
            model.partial_fit(x, y)
            mse = float(np.mean((model.predict(x) - y) ** 2))
            mlflow.log_metric("mse", mse, step=epoch)
            print(f"epoch {epoch} mse={mse:.4f}", flush=True)
            if args.pause and epoch < args.epochs - 1:
                print("paused: press Enter to continue", flush=True)
                sys.stdin.readline()
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict(x)),
            # pinned here so logging does not spend seconds inferring requirements
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
        )
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
