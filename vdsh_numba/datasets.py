"""Raw datasets: the embedded ``digits`` set and MNIST from IDX files (downloaded if absent).

Every loader returns a :class:`RawDataset`: images (``uint8`` or float, ``(n, H, W)``),
integer labels and an ``info`` dict saying what was loaded (``subset`` tells when only
MNIST's 10,000-image test set was available).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import struct
import sys
import urllib.request
from pathlib import Path

import numpy as np

__all__ = ["RawDataset", "DataError", "load_dataset", "DATASETS", "read_idx", "MNIST_FILES",
           "payload_sha256"]


class DataError(ValueError):
    """Raw data is missing, corrupt or inconsistent. The message says which file and what to do."""


@dataclasses.dataclass
class RawDataset:
    images: np.ndarray
    labels: np.ndarray
    info: dict


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


def _verify(path: Path, stem: str, payload: bytes) -> str:
    kind, count, sha, md5s = MNIST_FILES[stem]
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


def _download(stem: str, data_dir: Path, progress: bool) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    dest = data_dir / (stem + ".gz")
    errors = []
    for base in MNIST_URLS:
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
                    f". Place the file there by hand (from {MNIST_URLS[1]}).")


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
            payload = _read_payload(p)
            checks[p.name] = _verify(p, stem, payload)
            parts[(split, kind)] = read_idx(payload, p, kind, MNIST_FILES[stem][1])
    if ("t10k", "images") not in parts or ("t10k", "labels") not in parts:
        raise DataError(f"{data_dir}: MNIST test files t10k-images-idx3-ubyte.gz and "
                        f"t10k-labels-idx1-ubyte.gz are missing; put them there or allow the download")
    splits = [s for s in ("train", "t10k") if (s, "images") in parts and (s, "labels") in parts]
    for s in splits:
        if parts[(s, "images")].shape[0] != parts[(s, "labels")].shape[0]:
            raise DataError(f"{data_dir}: {s} has {parts[(s, 'images')].shape[0]} images but "
                            f"{parts[(s, 'labels')].shape[0]} labels")
    images = np.concatenate([parts[(s, "images")] for s in splits])
    labels = np.concatenate([parts[(s, "labels")] for s in splits]).astype(np.int64)
    subset = "full" if splits == ["train", "t10k"] else "test-only"
    return RawDataset(images, labels, {"dataset": "mnist", "source": str(data_dir), "n": int(len(labels)),
                                       "shape": [28, 28], "max_value": 255, "subset": subset,
                                       "verified": checks})


DATASETS = {"digits": load_digits_dataset, "mnist": load_mnist}


def load_dataset(name: str, data_dir, progress=True) -> RawDataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name](data_dir, progress=progress)
