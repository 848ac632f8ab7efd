"""Built-in tasks beyond the paper's: iris, smooth-xor, the train/test split, accuracy and
random regular graphs."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import builtin_dict

from clln import config, datasets
from clln.errors import ConfigError
from clln.sim.training import accuracy, evaluate_on, make_model, train


@pytest.fixture
def iris_dict():
    return copy.deepcopy(builtin_dict("iris-torus8"))


def test_iris_dataset_shape_classes_and_volts():
    features, species = datasets.iris_measurements()
    assert features.shape == (150, 4)
    assert np.bincount(species).tolist() == [50, 50, 50]
    # Fisher's first flower and the species' mean petal lengths (cm)
    assert features[0].tolist() == [5.1, 3.5, 1.4, 0.2]
    np.testing.assert_allclose([features[species == k, 2].mean() for k in range(3)],
                               [1.462, 4.26, 5.552])
    x, y = datasets.BUILTIN["iris"]()
    assert x.shape == (150, 4) and y.shape == (150, 3)
    np.testing.assert_allclose(x.min(axis=0), 0.0, atol=1e-15)
    np.testing.assert_allclose(x.max(axis=0), datasets.INPUT_SPAN)
    assert set(np.unique(y)) == {datasets.CLASS_ON, datasets.CLASS_OFF}
    assert (y.argmax(axis=1) == species).all() and ((y == datasets.CLASS_ON).sum(1) == 1).all()


def test_smooth_xor_corners_are_xor():
    x, y = datasets.BUILTIN["smooth-xor"]()
    assert x.shape == (36, 2) and y.shape == (36, 1)
    xor_x, xor_y = datasets.BUILTIN["xor"]()
    for xi, yi in zip(xor_x, xor_y[:, 0], strict=True):
        row = np.flatnonzero((x == xi).all(axis=1))
        assert len(row) == 1 and y[row[0], 0] == pytest.approx(yi)
    # symmetric in the two inputs and zero on the diagonal: the best linear fit is flat
    a = np.c_[x, np.ones(len(x))]
    coef = np.linalg.lstsq(a, y[:, 0], rcond=None)[0]
    np.testing.assert_allclose(coef[:2], 0.0, atol=1e-12)
    assert (y[x[:, 0] == x[:, 1]] == 0).all()


def test_split_is_seeded_stratified_and_disjoint(iris_dict):
    cfg = config.parse(iris_dict)
    task = cfg.task
    assert task.classification and task.test_fraction == 0.3
    assert len(task.x) == 105 and task.n_test == 45
    assert np.bincount(task.labels_test).tolist() == [15, 15, 15]
    # the two sets partition the 150 flowers, and are the rows the split names
    x_all, _ = datasets.BUILTIN["iris"]()
    idx_train, idx_test = datasets.split(150, 0.3, task.split_seed, np.repeat(np.arange(3), 50))
    assert not set(idx_train.tolist()) & set(idx_test.tolist())
    assert sorted(idx_train.tolist() + idx_test.tolist()) == list(range(150))
    np.testing.assert_array_equal(task.x, x_all[idx_train])
    np.testing.assert_array_equal(task.x_test, x_all[idx_test])
    assert sorted(idx_train.tolist()) != idx_train.tolist()     # presented shuffled
    # the same seed gives the same split, another seed another one
    again = config.parse(copy.deepcopy(iris_dict)).task
    np.testing.assert_array_equal(again.x, task.x)
    iris_dict["task"]["split_seed"] = task.split_seed + 1
    other = config.parse(iris_dict).task
    assert not np.array_equal(np.sort(other.x_test, axis=0), np.sort(task.x_test, axis=0))


def test_no_test_fraction_keeps_every_example_in_order(iris_dict):
    del iris_dict["task"]["test_fraction"]
    task = config.parse(iris_dict).task
    np.testing.assert_array_equal(task.x, datasets.BUILTIN["iris"]()[0])
    assert task.n_test == 0


def test_regression_split_is_not_stratified(xor_dict):
    xor_dict["task"] = {"dataset": "smooth-xor", "test_fraction": 0.25, "split_seed": 3}
    task = config.parse(xor_dict).task
    assert not task.classification and (len(task.x), task.n_test) == (27, 9)
    assert task.labels is None


@pytest.mark.parametrize("key, value, fragment", [
    ("test_fraction", 1.0, "< 1.0"),
    ("test_fraction", -0.1, ">= 0.0"),
    ("test_fraction", "0.3", "a finite number"),
    ("test_fraction", 0.001, "leaves no test example"),
    ("test_fraction", 0.99, "leaves class 0 no training example"),
    ("split_seed", -1, ">= 0"),
    ("split_seed", 1.5, "an integer"),
    ("classification", "yes", "true or false"),
])
def test_bad_split_keys_are_refused(iris_dict, key, value, fragment):
    iris_dict["task"][key] = value
    with pytest.raises(ConfigError) as info:
        config.parse(iris_dict, "iris.toml")
    assert info.value.key == f"task.{key}" and fragment in info.value.why, str(info.value)


def test_classification_needs_classes(xor_dict, tmp_path):
    xor_dict["task"]["classification"] = True
    with pytest.raises(ConfigError, match="at least 2"):
        config.parse(xor_dict)
    (tmp_path / "tie.csv").write_text("x1,x2,y1,y2\n0.1,0.2,0.05,0.05\n0.3,0.1,0.06,-0.06\n")
    xor_dict["io"]["outputs"] = [[10, 0], [2, 8]]
    xor_dict["task"]["dataset"] = "tie.csv"
    with pytest.raises(ConfigError, match="example 0 has no single largest target"):
        config.parse(xor_dict, base_dir=tmp_path)


def test_cli_refuses_bad_split_with_one_line(tmp_path):
    text = (config.resolve("iris-torus8").read_text()
            .replace("test_fraction = 0.3", "test_fraction = 1.5"))
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    r = subprocess.run([sys.executable, "-m", "clln.cli", "train", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"clln: error: {bad}: task.test_fraction: must be < 1.0, got 1.5"]


def test_accuracy_on_a_hand_made_case():
    outputs = np.array([[[0.3, 0.1, 0.2],      # class 0
                         [0.0, 0.1, -0.2],     # class 1
                         [0.5, 0.5, 0.1],      # tie between 0 and 1: the first wins
                         [-0.1, -0.3, -0.2]],  # class 0
                        [[0.1, 0.3, 0.2],
                         [0.0, 0.1, 0.2],
                         [0.1, 0.5, 0.6],
                         [0.0, 0.1, 0.2]]])
    labels = np.array([0, 1, 0, 2])
    np.testing.assert_allclose(accuracy(outputs, labels), [0.75, 0.25])


def test_random_regular_graph_properties():
    for nodes, degree in ((64, 4), (30, 3), (9, 2), (12, 9), (2, 1)):
        edges = config.random_regular(nodes, degree, seed=5)
        assert len(edges) == nodes * degree // 2
        assert (np.bincount(edges.ravel(), minlength=nodes) == degree).all()
        assert (edges[:, 0] < edges[:, 1]).all()              # no self-loops
        assert len({tuple(e) for e in edges.tolist()}) == len(edges)   # no multi-edges
        assert config._connected(nodes, edges)
    a, b = config.random_regular(64, 4, 5), config.random_regular(64, 4, 5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, config.random_regular(64, 4, 6))


def test_random_regular_draws_again_until_connected(monkeypatch):
    """A disconnected draw (two K4 for 8 nodes of degree 3) is drawn again; only
    disconnected draws end in an error."""
    two_k4 = {(a, b) for q in (0, 4) for a in range(q, q + 4) for b in range(a + 1, q + 4)}
    cube = {(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1}
    draws = [two_k4, cube]
    monkeypatch.setattr(config, "_pairings", lambda n, d, rng: draws.pop(0))
    assert {tuple(e) for e in config.random_regular(8, 3, 0).tolist()} == cube
    monkeypatch.setattr(config, "_pairings", lambda n, d, rng: set(two_k4))
    with pytest.raises(ValueError, match="none of 100 graphs drawn was connected"):
        config.random_regular(8, 3, 0)


@pytest.mark.parametrize("nodes, degree, fragment", [
    (9, 3, "nodes * degree must be even"),
    (8, 8, "between 1 and nodes - 1 = 7"),
    (8, 1, "never connected"),
    (8, 0, ">= 1"),
])
def test_impossible_random_regular_is_refused(iris_dict, nodes, degree, fragment):
    iris_dict["network"] = {"topology": "random-regular", "nodes": nodes, "degree": degree}
    iris_dict["io"] = {"inputs": [0, 1], "outputs": [[2, 3]]}
    with pytest.raises(ConfigError) as info:
        config.parse(iris_dict)
    assert info.value.key == "network.degree" and fragment in info.value.why, str(info.value)


def test_random_regular_config_draws_its_graph():
    cfg = config.load("iris-regular")
    net = cfg.network
    assert net.topology == "random-regular" and (net.degrees() == 4).all()
    data = builtin_dict("iris-regular")["network"]
    np.testing.assert_array_equal(
        net.edges, config.random_regular(data["nodes"], data["degree"], data["graph_seed"]))


def test_evaluate_on_equals_evaluate_on_the_same_examples():
    """The twin that evaluates the test set sees the trained gates and node state."""
    cfg = config.load("iris-torus8")
    for name in ("quasistatic", "fixed"):
        model = make_model(cfg, name, [0, 1])
        train(model, 1)
        gates = model.gates.copy()
        own = model.evaluate()
        twin = evaluate_on(model, cfg.task.x, cfg.task.y)
        np.testing.assert_array_equal(model.gates, gates)
        np.testing.assert_allclose(twin, own, rtol=0, atol=1e-9 if name == "quasistatic" else 0)


def test_short_training_learns_iris():
    """Five epochs on the 8x8 torus: the error falls and both accuracies rise from the
    untrained network's."""
    cfg = config.load("iris-torus8")
    model = make_model(cfg, "quasistatic", [0, 1])
    before_test = accuracy(evaluate_on(model, cfg.task.x_test, cfg.task.y_test),
                           cfg.task.labels_test)
    h = train(model, 5)
    before_train = accuracy(h.outputs_initial, cfg.task.labels)
    assert (h.mse_final < h.mse_initial).all()
    assert (h.accuracy_train > before_train).all(), (before_train, h.accuracy_train)
    assert (h.accuracy > before_test).all(), (before_test, h.accuracy)


def test_cli_reports_accuracy_for_every_model(tmp_path):
    for model, extra in (("quasistatic", ["--seeds", "0-1"]), ("dynamic", []),
                         ("fixed", [])):
        r = subprocess.run([sys.executable, "-m", "clln.cli", "train", "iris-torus8", "--model",
                            model, "--epochs", "1", "--json", *extra],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        if extra:
            assert len(out["accuracy"]) == len(out["accuracy_train"]) == 2
            values = out["accuracy"] + out["accuracy_train"]
        else:
            values = [out["accuracy"], out["accuracy_train"]]
        # a fraction of 45 test and 105 training flowers
        assert all(0 <= v <= 1 for v in values)
        assert all(abs(v * 45 - round(v * 45)) < 1e-9 for v in values[:len(values) // 2])
        assert np.array(out["outputs_final"]).shape[-2:] == (105, 3)
    r = subprocess.run([sys.executable, "-m", "clln.cli", "train", "iris-torus8", "--epochs",
                        "1"], capture_output=True, text=True, cwd=tmp_path)
    assert "accuracy (test)" in r.stdout and "test set: 45 examples" in r.stdout
    r = subprocess.run([sys.executable, "-m", "clln.cli", "train", "paper-regression",
                        "--epochs", "1", "--json"], capture_output=True, text=True)
    out = json.loads(r.stdout)
    assert out["accuracy"] is None and out["accuracy_train"] is None
    assert out["mse_test"] is None
