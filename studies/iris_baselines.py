"""What simple classifiers reach on the iris split of a config: the yardstick of
docs/results.md ("Iris").

    python studies/iris_baselines.py [--config iris-torus8] [--split-seeds 0,1,2]

For each split seed, on that config's training and test flowers (``task.test_fraction``),
this fits three classifiers on the same input volts and targets the network learns and
prints a markdown table of their accuracies (the class read as the largest output) and
training MSE:

- least squares, linear: the best affine map from the 4 inputs to the 3 targets, what a
  network that is linear in its inputs can at best do by lowering the MSE;
- least squares on the inputs and their squares (a quadratic map);
- softmax (logistic) regression, linear, fitted by gradient descent on the cross-entropy.
"""

import argparse
import copy
import tomllib

import numpy as np

from clln import config


def affine(x):
    return np.c_[x, np.ones(len(x))]


def least_squares(features, task):
    """Accuracies (train, test) and training MSE of the least-squares map."""
    a, a_test = features(task.x), features(task.x_test)
    w = np.linalg.lstsq(affine(a), task.y, rcond=None)[0]
    fit, fit_test = affine(a) @ w, affine(a_test) @ w
    return (np.mean(fit.argmax(1) == task.labels), np.mean(fit_test.argmax(1) == task.labels_test),
            np.mean((fit - task.y) ** 2))


def softmax_regression(task, steps=20000, rate=20.0):
    """Accuracies (train, test) of a linear softmax classifier (gradient descent)."""
    a, a_test = affine(task.x), affine(task.x_test)
    onehot = np.eye(task.y.shape[1])[task.labels]
    w = np.zeros((a.shape[1], onehot.shape[1]))
    for _ in range(steps):
        z = a @ w
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        w -= rate * a.T @ (p - onehot) / len(a)
    return (np.mean((a @ w).argmax(1) == task.labels),
            np.mean((a_test @ w).argmax(1) == task.labels_test), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="iris-torus8")
    parser.add_argument("--split-seeds", default="0,1,2")
    args = parser.parse_args()
    path = config.resolve(args.config)
    data = tomllib.loads(path.read_text())
    cfg = config.parse(data, str(path), path.parent)
    print(f"{cfg.name}: {len(cfg.task.x)} training, {cfg.task.n_test} test flowers\n")
    print("| split_seed | classifier | accuracy (test) | accuracy_train | MSE train (V^2) |")
    print("|---|---|---|---|---|")
    for seed in map(int, args.split_seeds.split(",")):
        point = copy.deepcopy(data)
        point["task"]["split_seed"] = seed
        task = config.parse(point, str(path), path.parent).task
        rows = {"least squares, linear": least_squares(lambda x: x, task),
                "least squares, with squares": least_squares(lambda x: np.c_[x, x ** 2], task),
                "softmax regression, linear": softmax_regression(task)}
        for name, (train, test, err) in rows.items():
            mse = "-" if err is None else f"{err:.2e}"
            print(f"| {seed} | {name} | {test:.3f} | {train:.3f} | {mse} |")


if __name__ == "__main__":
    main()
