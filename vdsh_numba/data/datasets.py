"""Raw datasets: the embedded ``digits`` set, MNIST from IDX files (downloaded if absent),
CIFAR-10 from the official python archive (downloaded if absent, md5-verified) and NUS-WIDE
from its published low-level features and label files (placed in ``data_dir`` by the user).

Every loader returns a :class:`RawDataset`: images (``uint8`` or float, ``(n, H, W)``; CIFAR-10
``(n, 32, 32, 3)`` RGB; NUS-WIDE ``(n, 500)`` feature vectors), labels (1-D class ids, or for
NUS-WIDE a 2-D 0/1 ``uint8`` matrix) and an ``info`` dict saying what was loaded (``subset``
tells when only MNIST's 10,000-image test set was available; ``official_split`` gives CIFAR-10's
train/test row ranges).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import io
import os
import pickle
import shutil
import struct
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .npz_dataset import load_npz
from .raw import DataError, RawDataset

__all__ = ["RawDataset", "DataError", "load_dataset", "DATASETS", "read_idx", "MNIST_FILES",
           "payload_sha256", "load_cifar10", "load_fashion_mnist", "FASHION_MNIST_FILES",
           "FASHION_MNIST_SYSTEM_DIR", "FASHION_MNIST_URLS", "FASHION_MNIST_CLASSES", "load_nuswide", "fetch", "file_md5", "CIFAR10_URL",
           "CIFAR10_ARCHIVE", "CIFAR10_MD5", "DatasetSpec", "check_raw"]


# --- digits (scikit-learn's bundled copy: no network) ---------------------------------------
def load_digits_dataset(data_dir=None, progress=False) -> RawDataset:
    from sklearn.datasets import load_digits
    d = load_digits()
    images = d.images.astype(np.uint8)  # 8x8, values 0..16
    return RawDataset(images, d.target.astype(np.int64),
                      {"dataset": "digits", "source": "sklearn.datasets.load_digits",
                       "n": int(images.shape[0]), "shape": list(images.shape[1:]), "max_value": 16,
                       "subset": "full"})


# --- MNIST ------------------------------------------------------------------------------------
MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",  # mirror used by torchvision
              "http://yann.lecun.com/exdb/mnist/")               # canonical
#: name -> (kind, count, sha256 of the decompressed payload or None, md5s of canonical archives)
MNIST_FILES = {
    "t10k-images-idx3-ubyte": ("images", 10000,
                               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                               ("9fb629c4189551a2d022fa330f9573f3",)),
    "t10k-labels-idx1-ubyte": ("labels", 10000,
                               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                               ("ec29112dd5afa0611ce80d1b7f02629c",)),
    # The training files' payload digests are not pinned here (no copy was available to measure);
    # they are verified by the canonical archives' md5 when the archive is canonical, and by
    # their IDX structure (magic, count, dimensions) otherwise.
    "train-images-idx3-ubyte": ("images", 60000, None, ("f68b3c2dcbeaaa9fbdd348bbdeb94873",)),
    "train-labels-idx1-ubyte": ("labels", 60000, None, ("d53e105ee54ea40749a09fcbcd1e9432",)),
}


def _find(data_dir: Path, stem: str):
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        p = data_dir / name
        if p.exists():
            return p
    return None


def _read_payload(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'raw IDX'} "
                        f"({e}); delete it and place a correct copy in {path.parent} "
                        f"(or let the download stage fetch it)") from e


def payload_sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def read_idx(payload: bytes, path, kind: str, count: int | None = None) -> np.ndarray:
    """Parse an IDX payload (magic 2051 = images ``(n, rows, cols)``, 2049 = labels ``(n,)``)."""
    want_magic, want_dims = (2051, 3) if kind == "images" else (2049, 1)
    if len(payload) < 4 + 4 * want_dims:
        raise DataError(f"{path}: too short for an IDX {kind} file ({len(payload)} bytes)")
    magic = struct.unpack(">i", payload[:4])[0]
    if magic != want_magic:
        raise DataError(f"{path}: wrong IDX magic number {magic}, expected {want_magic} for {kind}")
    dims = struct.unpack(">" + "i" * want_dims, payload[4:4 + 4 * want_dims])
    if count is not None and dims[0] != count:
        raise DataError(f"{path}: header says {dims[0]} items, expected {count}")
    if kind == "images" and dims[1:] != (28, 28):
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    body = np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * want_dims)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: payload has {body.size} bytes, header {dims} needs {int(np.prod(dims))}")
    return body.reshape(dims).copy()


# --- Fashion-MNIST (Xiao, Rasul & Vollgraf 2017: same IDX layout as MNIST) --------------------
FASHION_MNIST_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # canonical
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")
#: Debian's ``dataset-fashion-mnist`` puts the four canonical files here
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
#: name -> (kind, count, sha256 of the decompressed payload, md5s of the published archives). All four
#: payload digests are pinned: measured on Debian's package and equal to those published for the
#: archives with the publisher's md5s (a re-compressed copy passes; other bytes do not).
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": ("images", 60000,
                                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                                ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",)),
    "train-labels-idx1-ubyte": ("labels", 60000,
                                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                                ("25c81989df183df01b3e8a0aad5dffbe",)),
    "t10k-images-idx3-ubyte": ("images", 10000,
                               "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                               ("bef4ecab320f06d8554ea6380940ec79",)),
    "t10k-labels-idx1-ubyte": ("labels", 10000,
                               "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                               ("bb300cfdad3c16e7a12a480ee83cd310",)),
}
#: Fashion-MNIST's class names, label order
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


def _verify(path: Path, stem: str, payload: bytes, files=MNIST_FILES) -> str:
    kind, count, sha, md5s = files[stem]
    got = payload_sha256(payload)
    if sha is not None:
        if got != sha:
            raise DataError(f"{path}: decompressed payload sha256 is {got}, expected {sha}; "
                            f"delete it and place a correct copy of {stem}.gz in {path.parent}")
        return "payload-sha256"
    if path.suffix == ".gz":
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        if md5 in md5s:
            return "archive-md5"
    return "idx-structure"


def _download(stem: str, data_dir: Path, progress: bool, urls=MNIST_URLS) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    dest = data_dir / (stem + ".gz")
    errors = []
    for base in urls:
        url = base + stem + ".gz"
        tmp = dest.with_name("." + dest.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
                total = int(r.headers.get("Content-Length") or 0)
                from tqdm import tqdm
                with tqdm(total=total or None, unit="B", unit_scale=True, desc=stem,
                          disable=not progress, file=sys.stderr) as bar:
                    while chunk := r.read(1 << 16):
                        f.write(chunk)
                        bar.update(len(chunk))
            os.replace(tmp, dest)
            return dest
        except OSError as e:
            errors.append(f"{url}: {e}")
            tmp.unlink(missing_ok=True)
    raise DataError(f"could not download {stem}.gz into {data_dir}: " + "; ".join(errors) +
                    f". Place the file there by hand (from {urls[0]}).")


def _read_idx_part(p: Path, stem: str, files) -> tuple[np.ndarray, str]:
    """One IDX file: payload verified against ``files[stem]``, parsed, labels inside 0..9."""
    payload = _read_payload(p)
    check = _verify(p, stem, payload, files)
    kind = files[stem][0]
    arr = read_idx(payload, p, kind, files[stem][1])
    if kind == "labels" and arr.size and arr.max() > 9:
        bad = int(np.argmax(arr > 9))
        raise DataError(f"{p}: label {arr[bad]} at item {bad} is outside the declared classes 0..9; "
                        f"delete it and place a correct copy in {p.parent}")
    return arr, check


def _stack_splits(parts, splits, data_dir):
    for s in splits:
        if parts[(s, "images")].shape[0] != parts[(s, "labels")].shape[0]:
            raise DataError(f"{data_dir}: {s} has {parts[(s, 'images')].shape[0]} images but "
                            f"{parts[(s, 'labels')].shape[0]} labels")
    images = np.concatenate([parts[(s, "images")] for s in splits])
    labels = np.concatenate([parts[(s, "labels")] for s in splits]).astype(np.int64)
    return images, labels


def load_mnist(data_dir, progress=True, download=True) -> RawDataset:
    """MNIST from IDX files in ``data_dir``; missing files are downloaded (canonical URL + mirror).

    If only the 10,000-image test set is present (and ``download`` fails or is off), the
    dataset is the test set alone and ``info["subset"] == "test-only"`` says so.
    """
    data_dir = Path(data_dir)
    parts, checks = {}, {}
    for split in ("train", "t10k"):
        for kind, stem in (("images", f"{split}-images-idx3-ubyte"), ("labels", f"{split}-labels-idx1-ubyte")):
            p = _find(data_dir, stem)
            if p is None and split == "train" and download and _find(data_dir, "t10k-images-idx3-ubyte"):
                # the test set is here: try to complete it, but run on the test set alone if offline
                try:
                    p = _download(stem, data_dir, progress)
                except DataError as e:
                    print(f"note: {e}\nnote: running on the MNIST test set alone", file=sys.stderr)
                    p = None
            elif p is None and download:
                p = _download(stem, data_dir, progress)
            if p is None:
                continue
            parts[(split, kind)], checks[p.name] = _read_idx_part(p, stem, MNIST_FILES)
    if ("t10k", "images") not in parts or ("t10k", "labels") not in parts:
        raise DataError(f"{data_dir}: MNIST test files t10k-images-idx3-ubyte.gz and "
                        f"t10k-labels-idx1-ubyte.gz are missing; put them there or allow the download")
    splits = [s for s in ("train", "t10k") if (s, "images") in parts and (s, "labels") in parts]
    images, labels = _stack_splits(parts, splits, data_dir)
    subset = "full" if splits == ["train", "t10k"] else "test-only"
    info = {"dataset": "mnist", "source": str(data_dir), "n": int(len(labels)), "shape": [28, 28],
            "max_value": 255, "subset": subset, "verified": checks}
    if subset == "full":
        info["official_split"] = {"train": [0, 60000], "test": [60000, 70000]}
    return RawDataset(images, labels, info)


def load_fashion_mnist(data_dir, progress=True, download=True) -> RawDataset:
    """Fashion-MNIST: the 60,000 training images first, then the 10,000 test images.

    Each of the four IDX files is looked for in ``data_dir``, then in
    :data:`FASHION_MNIST_SYSTEM_DIR` (``apt-get install dataset-fashion-mnist``), and else
    downloaded into ``data_dir`` with a progress bar (``download=True``). Every decompressed
    payload must have its pinned sha256. ``info["official_split"]`` holds the row ranges.
    """
    data_dir = Path(data_dir)
    parts, checks, sources = {}, {}, set()
    for split in ("train", "t10k"):
        for kind in ("images", "labels"):
            stem = f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
            p = _find(data_dir, stem) or _find(FASHION_MNIST_SYSTEM_DIR, stem)
            if p is None and download:
                p = _download(stem, data_dir, progress, FASHION_MNIST_URLS)
            if p is None:
                raise DataError(f"{data_dir}: Fashion-MNIST file {stem}.gz is missing (also not in "
                                f"{FASHION_MNIST_SYSTEM_DIR}); run `apt-get install dataset-fashion-mnist`, "
                                f"place it in {data_dir} (from {FASHION_MNIST_URLS[0]}) or allow the download")
            parts[(split, kind)], checks[p.name] = _read_idx_part(p, stem, FASHION_MNIST_FILES)
            sources.add(str(p.parent))
    images, labels = _stack_splits(parts, ("train", "t10k"), data_dir)
    return RawDataset(images, labels, {
        "dataset": "fashion_mnist", "source": ", ".join(sorted(sources)), "n": int(len(labels)),
        "shape": [28, 28], "max_value": 255, "subset": "full", "verified": checks,
        "classes": list(FASHION_MNIST_CLASSES),
        "official_split": {"train": [0, 60000], "test": [60000, 70000]}})


# --- resumable download ------------------------------------------------------------------------
def file_md5(path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest, progress=True, timeout=30) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, resuming a partial download.

    Bytes arrive in ``.<name>.part`` beside ``dest``; when that file exists, the request asks
    for the rest (HTTP ``Range: bytes=<size>-``) and appends if the server answers 206 (a 200
    means no range support: start over). A broken connection keeps the partial file, so running
    again resumes. ``dest`` appears (renamed) only when the transfer is complete; verifying its
    content is the caller's job.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name("." + dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            if have and r.status != 206:
                have = 0  # the server ignored the range: the whole file follows
            elif have and not r.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                part.unlink()
                raise DataError(f"{url}: the server resumed at {r.headers.get('Content-Range')!r}, not "
                                f"at byte {have}; the partial file was deleted, run again to start over")
            length = int(r.headers.get("Content-Length") or 0)
            from tqdm import tqdm
            with open(part, "ab" if have else "wb") as f, \
                    tqdm(total=(have + length) or None, initial=have, unit="B", unit_scale=True,
                         desc=dest.name, disable=not progress, file=sys.stderr) as bar:
                while chunk := r.read(1 << 16):
                    f.write(chunk)
                    bar.update(len(chunk))
            got = part.stat().st_size - have
            if length and got != length:  # the connection closed early without an error
                raise http.client.IncompleteRead(b"", length - got)
    except urllib.error.HTTPError as e:
        if not (e.code == 416 and have):  # 416: nothing left to send, the partial file is whole
            raise DataError(f"could not download {url}: HTTP {e.code} {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:
        kept = part.stat().st_size if part.exists() else 0
        raise DataError(f"could not download {url} ({e}); {kept} bytes are kept in {part}: run the "
                        f"download stage again to resume, or place {dest.name} in {dest.parent} "
                        f"by hand") from e
    os.replace(part, dest)
    return dest


# --- CIFAR-10 ---------------------------------------------------------------------------------
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
#: published at https://www.cs.toronto.edu/~kriz/cifar.html
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


class _BatchUnpickler(pickle.Unpickler):
    """The CIFAR batches are pickles (Python 2, numpy arrays inside): allow numpy's array
    reconstruction and nothing else, so a foreign pickle cannot run code."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def _read_batch(tar, member, path):
    name = member.name
    try:
        f = tar.extractfile(member)
        d = _BatchUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (KeyError, AttributeError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DataError(f"{path}: member {name} is not a CIFAR-10 python batch ({e})") from e
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    data = np.asarray(d.get("data"))
    labels = np.asarray(d.get("labels"), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {name} holds data {data.dtype} {data.shape} and {labels.shape} labels; "
                        f"expected uint8 (n, 3072) and n labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: {name} has labels outside 0..9")
    # rows are 1024 red, 1024 green, 1024 blue values, each a 32 x 32 image in row-major order
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10(data_dir, progress=True, download=True) -> RawDataset:
    """CIFAR-10 from ``data_dir/cifar-10-python.tar.gz``, downloaded from the official URL if
    absent (resumable). The archive's md5 must be the published one; anything else is refused.

    Returns the 50,000 training images (``data_batch_1..5``) then the 10,000 test images
    (``test_batch``) as uint8 ``(60000, 32, 32, 3)``; ``info["official_split"]`` holds their
    row ranges.
    """
    data_dir = Path(data_dir)
    path = data_dir / CIFAR10_ARCHIVE
    fetched = False
    if not path.exists():
        if not download:
            raise DataError(f"{path} is missing: put the official {CIFAR10_ARCHIVE} there "
                            f"(from {CIFAR10_URL}) or allow the download")
        fetch(CIFAR10_URL, path, progress)
        fetched = True
    md5 = file_md5(path)
    if md5 != CIFAR10_MD5:
        if fetched:
            path.unlink()
        raise DataError(f"{path}: md5 is {md5}, expected the published {CIFAR10_MD5}: this is not "
                        f"the official CIFAR-10 python archive"
                        + (" (the downloaded file was deleted)" if fetched else
                           f"; delete it and let the download stage fetch {CIFAR10_URL}"))
    parts = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            names = {m.name.split("/")[-1]: m for m in tar.getmembers() if m.isfile()}
            missing = [b for b in CIFAR10_BATCHES if b not in names]
            if missing:
                raise DataError(f"{path}: the archive lacks {missing}")
            parts = [_read_batch(tar, names[b], path) for b in CIFAR10_BATCHES]
            classes = None
            if "batches.meta" in names:
                meta = _BatchUnpickler(tar.extractfile(names["batches.meta"]), encoding="latin1").load()
                classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get("label_names", [])]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot be read as a gzip tar archive ({e})") from e
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    labels = np.concatenate([p[1] for p in parts])
    n_train = sum(p[0].shape[0] for p in parts[:5])
    return RawDataset(images, labels, {
        "dataset": "cifar10", "source": str(path), "n": int(labels.size), "shape": [32, 32, 3],
        "max_value": 255, "subset": "full", "verified": {path.name: "archive-md5"},
        "official_split": {"train": [0, int(n_train)], "test": [int(n_train), int(labels.size)]},
        "classes": classes})


# --- NUS-WIDE ---------------------------------------------------------------------------------
#: NUS Lab for Media Search (the page has moved over the years; search "NUS-WIDE" if it is gone)
NUSWIDE_PAGE = "http://lms.comp.nus.edu.sg/research/NUS-WIDE.htm"
#: the published 500-d bag of visual words (SIFT), first found wins
NUSWIDE_FEATURES = ("BoW_int.dat", "Normalized_BoW.dat")
NUSWIDE_TOP_CONCEPTS = 21
_NUS_DIRS = (".", "Low_Level_Features", "NUS_WID_Low_Level_Features/Low_Level_Features", "Groundtruth",
             "NUS_WID_Tags", "ConceptsList")
NUSWIDE_HELP = (
    "nuswide needs, in data_dir (or its Low_Level_Features/, Groundtruth/, NUS_WID_Tags/, ConceptsList/):\n"
    "  1. BoW_int.dat: the 500-d bag of visual words, one image per line (from the 'Low-Level "
    "Features' download, NUS_WID_Low_Level_Features.rar; Normalized_BoW.dat is accepted too);\n"
    "  2. the ground truth AllLabels/Labels_<concept>.txt, 81 files of one 0/1 per line (from "
    "Groundtruth.zip), or one 0/1 matrix file AllLabels81.txt (the 81 label files side by side, in "
    "the order of ConceptsList/Concepts81.txt) or AllTags81.txt (NUS_WID_Tags; tag-based, noisier).\n"
    f"The dataset has no stable public download: request it from the NUS-WIDE page, {NUSWIDE_PAGE}.")


def _nus_find(data_dir: Path, name: str):
    for d in _NUS_DIRS:
        p = data_dir / d / name
        if p.exists():
            return p
    return None


def _read_matrix(path, dtype):
    import pandas as pd
    try:
        m = pd.read_csv(path, sep=r"\s+", header=None, dtype=dtype, engine="c").to_numpy()
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a whitespace-separated numeric matrix ({e})") from e
    return m


def _nus_labels(data_dir: Path):
    """(0/1 uint8 matrix, concept names, source) from AllLabels/Labels_*.txt or a matrix file."""
    for d in ("Groundtruth/AllLabels", "AllLabels"):
        files = sorted((data_dir / d).glob("Labels_*.txt"))
        if files:
            cols = [_read_matrix(f, np.int64).ravel() for f in files]
            if len({c.size for c in cols}) != 1:
                sizes = {f.name: c.size for f, c in zip(files, cols)}
                raise DataError(f"{data_dir / d}: the label files have different lengths {sizes}")
            names = [f.name[len("Labels_"):-len(".txt")] for f in files]
            return np.stack(cols, axis=1), names, str(data_dir / d)
    for name in ("AllLabels81.txt", "AllTags81.txt"):
        p = _nus_find(data_dir, name)
        if p is not None:
            Y = _read_matrix(p, np.int64)
            cp = _nus_find(data_dir, "Concepts81.txt")
            names = [line.strip() for line in cp.read_text().splitlines() if line.strip()] if cp else []
            if names and len(names) != Y.shape[1]:
                raise DataError(f"{cp} lists {len(names)} concepts but {p} has {Y.shape[1]} columns")
            return Y, names or [f"concept_{j}" for j in range(Y.shape[1])], str(p)
    raise DataError(f"{data_dir}: no NUS-WIDE label files found.\n" + NUSWIDE_HELP)


def load_nuswide(data_dir, progress=True, download=True) -> RawDataset:
    """NUS-WIDE, the hashing literature's 21-concept version: the published 500-d bag of visual
    words and ground-truth labels, restricted to the 21 most frequent concepts and to the images
    that have at least one of them (195,834 of 269,648 in the full dataset).

    Labels are a 0/1 ``uint8`` matrix ``(n, 21)`` (columns in the label files' concept order);
    ``info["concepts"]`` names them. Nothing is downloaded (see ``NUSWIDE_HELP``).
    """
    data_dir = Path(data_dir)
    fp = next((p for p in (_nus_find(data_dir, f) for f in NUSWIDE_FEATURES) if p is not None), None)
    if fp is None:
        raise DataError(f"{data_dir}: no NUS-WIDE feature file ({' or '.join(NUSWIDE_FEATURES)}) found.\n"
                        + NUSWIDE_HELP)
    Y, names, label_source = _nus_labels(data_dir)
    X = _read_matrix(fp, np.float32)
    if X.shape[1] != 500:
        raise DataError(f"{fp}: {X.shape[1]} values per line, expected the 500-d bag of visual words")
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"{fp} has {X.shape[0]} images but the labels ({label_source}) have {Y.shape[0]}")
    if not np.all((Y == 0) | (Y == 1)):
        bad = np.argwhere((Y != 0) & (Y != 1))[0]
        raise DataError(f"{label_source}: labels must be 0/1, found {Y[tuple(bad)]} "
                        f"(image {bad[0]}, concept {names[bad[1]]})")
    counts = Y.sum(axis=0)
    top = np.sort(np.argsort(-counts, kind="stable")[:NUSWIDE_TOP_CONCEPTS])  # keep file order
    Y = Y[:, top].astype(np.uint8)
    keep = np.flatnonzero(Y.any(axis=1))
    return RawDataset(X[keep], Y[keep], {
        "dataset": "nuswide", "source": str(fp), "labels_source": label_source, "n": int(keep.size),
        "n_total": int(X.shape[0]), "shape": [500], "max_value": 1, "subset": "full",
        "kind": "vectors", "concepts": [names[j] for j in top],
        "concept_counts": [int(counts[j]) for j in top]})


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline knows about one dataset, in one place.

    ``load(data_dir, progress=...)`` returns a :class:`RawDataset`; ``classes``: the labels a
    single-label dataset declares (``0 .. classes-1``; ``None``: multi-label or not fixed);
    ``protocol``: the ``auto`` values of ``protocol.queries_per_class`` / ``train_per_class``
    (and ``query_pool: test`` where the standard queries come from the official test set);
    ``official_split``: whether ``protocol.name: test-train`` applies (the loader records the
    row ranges); ``images``: whether it has images (``features: gist``) or only vectors;
    ``bundled``: needs no ``data_dir``.
    """

    load: object
    classes: int | None
    protocol: dict
    official_split: bool = False
    images: bool = True
    bundled: bool = False


_PER_CLASS = {"queries_per_class": 100, "train_per_class": 500}
#: the dataset registry: adding a dataset is its loader and one line here
DATASETS = {
    "digits": DatasetSpec(load_digits_dataset, 10, {"queries_per_class": 20, "train_per_class": 100},
                          bundled=True),
    "mnist": DatasetSpec(load_mnist, 10, _PER_CLASS, official_split=True),
    "fashion_mnist": DatasetSpec(load_fashion_mnist, 10, {**_PER_CLASS, "query_pool": "test"},
                                 official_split=True),
    "cifar10": DatasetSpec(load_cifar10, 10, _PER_CLASS, official_split=True),
    "nuswide": DatasetSpec(load_nuswide, None, _PER_CLASS, images=False),  # per concept
    "npz": DatasetSpec(load_npz, None, _PER_CLASS,
                       official_split=True, images=False),
}


def check_raw(images, labels, info, where) -> None:
    """Refuse raw data that would poison every later stage; the message names ``where``.

    Checks: one label (row) per image, finite values, single-label ids inside the dataset's
    declared classes (``DATASETS[name].classes``), multi-label matrices of 0/1.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if labels.ndim not in (1, 2) or labels.shape[0] != images.shape[0]:
        raise DataError(f"{where}: {images.shape[0]} images but labels of shape {labels.shape}; "
                        f"expected one label (or label row) per image")
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        bad = np.argwhere(~np.isfinite(images.reshape(images.shape[0], -1)))[0]
        raise DataError(f"{where}: image {bad[0]} holds NaN or Inf (value {bad[1]}); "
                        f"fix or drop it before running the pipeline")
    if labels.ndim == 2:
        if not np.all((labels == 0) | (labels == 1)):
            raise DataError(f"{where}: multi-label labels must be a 0/1 matrix")
        return
    if labels.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be integer class ids, got dtype {labels.dtype}")
    spec = DATASETS.get(info.get("dataset"))
    c = spec.classes if spec is not None else None
    lo, hi = (0, c - 1) if c else (0, None)
    out = (labels < lo) | (labels > hi) if hi is not None else labels < lo
    if labels.size and out.any():
        i = int(np.argmax(out))
        declared = f"0..{hi}" if hi is not None else "non-negative ids"
        raise DataError(f"{where}: label {labels[i]} of item {i} is outside the declared classes "
                        f"{declared} of {info.get('dataset')!r}")


def load_dataset(name: str, data_dir, progress=True) -> RawDataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name].load(data_dir, progress=progress)
