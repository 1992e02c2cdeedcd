import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: CI lays the real data at ../shared/data beside the checkout; a missing folder is a failure.
SHARED_DATA = Path(os.environ.get("VDSH_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mnist_dir():
    d = SHARED_DATA / "mnist"
    if not (d / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"the MNIST test set is expected at {d} (../shared/data/mnist beside the checkout)")
    return d


@pytest.fixture(scope="session")
def fashion_dir():
    """Debian's dataset-fashion-mnist (.ci/run installs it); a missing file is a failure."""
    from vdsh_numba.data.datasets import FASHION_MNIST_FILES, FASHION_MNIST_SYSTEM_DIR
    missing = [s for s in FASHION_MNIST_FILES if not (FASHION_MNIST_SYSTEM_DIR / f"{s}.gz").exists()]
    if missing:
        pytest.fail(f"Fashion-MNIST files {missing} are expected in {FASHION_MNIST_SYSTEM_DIR}: "
                    f"apt-get update && apt-get install -y dataset-fashion-mnist")
    return FASHION_MNIST_SYSTEM_DIR
