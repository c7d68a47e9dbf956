"""Make the top-level scripts importable from the tests, and give the tests the real MNIST."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope='session')
def mnist_data():
    """The real MNIST from data/ (x_train, y_train, x_val, y_val, as load_mnist gives them).
    The tests never download it: CI copies the files in, and a missing one fails here."""
    from mnist import SHA256, load_mnist
    missing = [n for n in SHA256 if not any((ROOT / 'data' / f).exists() for f in (n, n + '.gz'))]
    if missing:
        pytest.fail(f'these tests need the four MNIST files in {ROOT / "data"}; missing: '
                    f'{missing} (python mnist.py downloads them, or copy them there)')
    return load_mnist(ROOT / 'data')
