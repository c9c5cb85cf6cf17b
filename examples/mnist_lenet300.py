"""MNIST LeNet-300-100 (Caffe variant, 266,610 parameters): train, compress, emit C, self-test.

    python examples/mnist_lenet300.py [--data DIR] [--budget 24KB] [--epochs 4] [--out out/mnist_lenet300]

Same options as examples/mnist_lenet5.py; MNIST is read from IDX files, never downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mnist_lenet5 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(model_name="lenet300"))
