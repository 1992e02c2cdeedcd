"""NUS-WIDE: the loader on small files in the published formats (built here), the 21-concept
selection, the multi-label split, and the stages end to end with 2-D labels."""
import json

import numpy as np
import pytest

from tests.test_cifar import fit_encode_evaluate, small_params
from vdsh_numba import pipeline
from vdsh_numba.pipeline import Layout
from vdsh_numba.pipeline.common import load_output
from vdsh_numba.data.datasets import DataError, load_nuswide
from vdsh_numba.data.features import split_indices
from vdsh_numba.pipeline.params import ParamsError

N, C = 300, 24
CONCEPTS = sorted(["sky", "clouds", "person", "water", "animal", "grass", "buildings", "window", "plants",
                   "lake", "ocean", "road", "flowers", "sunset", "reflection", "rocks", "vehicle", "snow",
                   "tree", "beach", "mountain", "cars", "whales", "zebra"])
RARE = ("cars", "whales", "zebra")  # 3 of 24 concepts, fewest positives: not among the top 21


def make_nuswide(d, seed=0, layout="files"):
    """BoW_int.dat (500 ints per line, space-separated, trailing space) in Low_Level_Features/ and
    the ground truth as Groundtruth/AllLabels/Labels_<concept>.txt (one 0/1 per line) or, with
    layout='matrix', one AllLabels81.txt matrix + ConceptsList/Concepts81.txt."""
    rng = np.random.default_rng(seed)
    Y = (rng.random((N, C)) < 0.25).astype(np.uint8)
    for c in RARE:
        j = CONCEPTS.index(c)
        Y[:, j] = 0
        Y[:8, j] = 1
    Y[-10:] = 0  # images with no concept at all
    Y[-10:-5, CONCEPTS.index("zebra")] = 1  # and some with only a rare one
    X = rng.poisson(1.0, (N, 500)) + 5 * Y[:, :1]  # a little signal from the first concept
    (d / "Low_Level_Features").mkdir(parents=True)
    (d / "Low_Level_Features" / "BoW_int.dat").write_text("".join(" ".join(map(str, r)) + " \n" for r in X))
    if layout == "files":
        (d / "Groundtruth" / "AllLabels").mkdir(parents=True)
        for j, c in enumerate(CONCEPTS):
            (d / "Groundtruth" / "AllLabels" / f"Labels_{c}.txt").write_text("".join(f"{v}\n" for v in Y[:, j]))
    else:
        (d / "AllLabels81.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in Y))
        (d / "ConceptsList").mkdir()
        (d / "ConceptsList" / "Concepts81.txt").write_text("".join(c + "\n" for c in CONCEPTS))
    return X, Y


@pytest.mark.parametrize("layout", ["files", "matrix"])
def test_loader_top21_concepts_and_labelled_images(tmp_path, layout):
    X, Y = make_nuswide(tmp_path, layout=layout)
    rd = load_nuswide(tmp_path, progress=False)
    top = [j for j, c in enumerate(CONCEPTS) if c not in RARE]
    keep = np.flatnonzero(Y[:, top].any(axis=1))
    assert rd.info["concepts"] == [CONCEPTS[j] for j in top] and len(top) == 21
    assert rd.labels.dtype == np.uint8 and rd.labels.shape == (keep.size, 21)
    np.testing.assert_array_equal(rd.labels, Y[keep][:, top])
    np.testing.assert_array_equal(rd.images, X[keep].astype(np.float32))
    assert rd.info["n_total"] == N and keep.size < N - 9  # unlabelled and rare-only rows dropped


def test_loader_says_which_files_it_needs(tmp_path):
    with pytest.raises(DataError, match=r"BoW_int.dat.*(?s:.*)AllLabels/Labels_<concept>.txt.*(?s:.*)NUS-WIDE"):
        load_nuswide(tmp_path, progress=False)
    make_nuswide(tmp_path)
    (tmp_path / "Groundtruth/AllLabels/Labels_sky.txt").write_text("0\n1\n")
    with pytest.raises(DataError, match="label files have different lengths"):
        load_nuswide(tmp_path, progress=False)
    for f in (tmp_path / "Groundtruth/AllLabels").iterdir():
        f.write_text("1\n" * (N - 1))
    with pytest.raises(DataError, match=f"has {N} images but the labels .* have {N - 1}"):
        load_nuswide(tmp_path, progress=False)


def test_multilabel_split_per_concept():
    rng = np.random.default_rng(0)
    Y = (rng.random((400, 5)) < 0.4).astype(np.uint8)
    q, db, tr = split_indices(Y, 6, 15, seed=1)
    assert q.size == 30 and tr.size == 75
    assert np.intersect1d(q, db).size == 0 and np.union1d(q, db).size == 400 and np.all(np.isin(tr, db))
    assert np.all(Y[q].any(axis=1)) and np.all(Y[tr].sum(axis=0) >= 15) and np.all(Y[q].sum(axis=0) >= 6)
    q2, _, tr2 = split_indices(Y, 6, 15, seed=1)
    np.testing.assert_array_equal(q, q2)
    np.testing.assert_array_equal(tr, tr2)
    with pytest.raises(ValueError, match="concept 2 has 3 items left for queries"):
        Y2 = Y.copy()
        Y2[:, 2] = 0
        Y2[:3, 2] = 1
        split_indices(Y2, 6, 15, seed=1)


def test_stages_end_to_end_multilabel(tmp_path, monkeypatch):
    d = tmp_path / "nus"
    make_nuswide(d)
    monkeypatch.chdir(tmp_path)
    p = small_params(dataset="nuswide", data_dir=str(d), features="pixels",
                     protocol={"name": "standard", "queries_per_class": 2, "train_per_class": 4})
    pipeline.download.run(p)
    pipeline.features.run(p)
    F = load_output(Layout().features, "features")
    info = json.loads(str(F["info"]))
    assert F["y_train"].dtype == np.uint8 and F["y_train"].shape == (84, 21) and F["y_query"].shape == (42, 21)
    assert F["X_train"].shape == (84, 500) and F["X_db"].shape[0] == info["n"] - 42
    assert len(info["concepts"]) == 21
    fit_encode_evaluate(p)


def test_params_for_nuswide():
    with pytest.raises(ParamsError, match="'features' is 'gist' but dataset 'nuswide'"):
        small_params(dataset="nuswide", features="gist")
    with pytest.raises(ParamsError, match="only mnist, fashion_mnist, cifar10, npz do"):
        small_params(dataset="nuswide", protocol={"name": "test-train"})
