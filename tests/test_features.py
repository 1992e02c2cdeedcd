import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from vdsh_numba.data.features import Standardizer, build_features, resolve_protocol, split_indices


def test_split_per_class_and_disjoint():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 400)
    q, db, tr = split_indices(y, 7, 20, seed=3)
    assert np.intersect1d(q, db).size == 0 and np.union1d(q, db).size == 400
    assert np.all(np.isin(tr, db))
    assert np.bincount(y[q]).tolist() == [7] * 5 and np.bincount(y[tr]).tolist() == [20] * 5
    q2, db2, tr2 = split_indices(y, 7, 20, seed=3)
    np.testing.assert_array_equal(q, q2); np.testing.assert_array_equal(tr, tr2)
    q3, _, _ = split_indices(y, 7, 20, seed=4)
    assert not np.array_equal(q, q3)


def test_split_too_small_class():
    y = np.array([0] * 10 + [1] * 3)
    with pytest.raises(ValueError, match="class 1 has 3 items"):
        split_indices(y, 2, 2, seed=0)


def test_standardizer_matches_sklearn_and_constant_column():
    rng = np.random.default_rng(0)
    X = rng.normal(3, 2, (50, 4))
    X[:, 2] = 5.0
    got = Standardizer("column").fit(X).transform(X)
    ref = StandardScaler().fit(X).transform(X)  # sklearn also maps constant columns to 0
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert np.all(got[:, 2] == 0)


def test_global_standardizer_against_naive():
    rng = np.random.default_rng(2)
    X = rng.normal(1, 3, (40, 5))
    X[:, 1] = 7.0
    got = Standardizer("global").fit(X).transform(X)
    c = X - X.mean(axis=0)
    ref = c / np.sqrt(np.sum(c ** 2) / c.size)  # one std over every centred training value
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert np.all(got[:, 1] == 0) and np.isfinite(got).all()
    with pytest.raises(ValueError, match="standardize mode"):
        Standardizer("pixel")


def test_build_features_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    imgs = rng.integers(0, 256, (90, 4, 4)).astype(np.uint8)
    F = build_features(imgs, y, 255, 5, 10, seed=0)
    Xt = imgs.reshape(90, -1)[F["train_idx"]] / 255.0
    np.testing.assert_allclose(F["X_train"].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(F["X_train"].std(), 1, atol=1e-5)
    np.testing.assert_allclose(F["mean"], Xt.mean(0))
    assert F["X_db"].shape[0] == 75 and F["X_query"].shape[0] == 15


def test_protocol_auto():
    assert resolve_protocol("mnist", {"queries_per_class": "auto", "train_per_class": 50}) == \
        {"queries_per_class": 100, "train_per_class": 50, "validation": False}
