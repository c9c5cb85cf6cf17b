"""Reusable end-to-end models for the parity tests (host gcc here, the emulated Cortex-M in test_board).

    E2E_MODELS = {name: (factory, input_shape)}   # input_shape includes the batch dim of 1
    model, x = build_model("lenet5")               # trained-like weights + a seeded sample input

``make_trained_like`` puts a freshly built model in a state that looks trained: seeded random
weights, BatchNorm running statistics and affine parameters far from their defaults (so BN folding
is really exercised), and magnitude-pruned weights (so the CSR encodings and kernels are used, with
a mix of dense and CSR layers and one all-zero output row for an empty CSR row).

Plain module; imported as ``models`` (pytest puts tests/ on sys.path) or ``tests.models``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- the models ---------------------------------------------------------------------------------


def lenet5() -> nn.Module:
    """LeNet-5, Caffe variant: 431,080 parameters, input 1x28x28."""
    return nn.Sequential(
        nn.Conv2d(1, 20, 5),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500),
        nn.ReLU(),
        nn.Linear(500, 10),
    )


def lenet300_100() -> nn.Module:
    """LeNet-300-100: 784-300-100-10, 266,610 parameters, input 1x28x28 (flattened)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


class BasicBlock(nn.Module):
    """ResNet basic block with a functional forward: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNetTiny(nn.Module):
    """A small residual CNN (3x16x16 input): stem, an identity block, a downsampling block, head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.layer2(self.layer1(x))
        x = self.pool(x)
        return self.fc(torch.flatten(x, 1))


def _ds_block(c: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
    )


def ds_cnn() -> nn.Module:
    """Keyword-spotting DS-CNN (Hello Edge, small): input 1x49x10 MFCC, 64 channels, 4 DS blocks, 12 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 64, (10, 4), stride=(2, 2), padding=(5, 1), bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        *[_ds_block(64) for _ in range(4)],
        nn.AvgPool2d((25, 5)),
        nn.Flatten(),
        nn.Linear(64, 12),
    )


def conv1d_sensor() -> nn.Module:
    """1-D CNN for sensor data (3 axes x 128 samples, 6 activity classes)."""
    return nn.Sequential(
        nn.Conv1d(3, 16, 5, padding=2),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(16, 32, 5, padding=2),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(32, 32, 3),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Flatten(),
        nn.Linear(32 * 15, 64),
        nn.ReLU(),
        nn.Linear(64, 6),
    )


class Inception(nn.Module):
    """Inception-like module: four branches concatenated along channels with torch.cat."""

    def __init__(self, cin: int):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, 8, 1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(cin, 6, 1), nn.ReLU(), nn.Conv2d(6, 12, 3, padding=1), nn.ReLU())
        self.b5 = nn.Sequential(nn.Conv2d(cin, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 5, padding=2), nn.ReLU())
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, 6, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class InceptionNet(nn.Module):
    """Stem conv, two inception modules, global average pool, linear (input 3x12x12)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.inc1 = Inception(16)
        self.pool = nn.MaxPool2d(2)
        self.inc2 = Inception(32)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inc2(self.pool(self.inc1(self.stem(x))))
        return self.fc(self.gap(x).flatten(1))


class OddNames(nn.Module):
    """Nested containers whose module names are C keywords (not Python ones: torch.fx writes
    Python source with them), start with digits, collide after
    sanitizing ("a.b" vs "a_b") or are names the generator reserves (input, output, arena, model)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict(
            {
                "switch": nn.Conv2d(2, 8, 3, padding=1),
                "2conv": nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)),
                "int": nn.ModuleList([nn.ReLU(), nn.MaxPool2d(2)]),
            }
        )
        self.a = nn.ModuleDict({"b": nn.Conv2d(8, 8, 1)})
        self.a_b = nn.Conv2d(8, 8, 1)
        self.input = nn.Flatten()
        self.model = nn.Linear(8 * 5 * 5, 16)
        self.arena = nn.ReLU()
        self.output = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks["switch"](x)
        x = self.blocks["2conv"](x)
        for m in self.blocks["int"]:
            x = m(x)
        x = self.a["b"](x) + self.a_b(x)
        return self.output(self.arena(self.model(self.input(x))))


class TensorMethods(nn.Module):
    """forward() uses tensor methods and functions: x.view(x.size(0), -1), x.mean((2, 3)),
    torch.flatten, F.relu, F.max_pool2d, torch.cat (input 1x12x12)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.conv2 = nn.Conv2d(8, 12, 3)
        self.fc1 = nn.Linear(12 * 4 * 4, 20)
        self.fc2 = nn.Linear(20 + 12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        g = y.mean((2, 3))  # global average: (N, 12)
        p = F.max_pool2d(y, 2)
        a = F.relu(self.fc1(torch.flatten(p, 1)))
        b = g.view(g.size(0), -1)
        z = torch.cat([a, b], 1)
        return self.fc2(z.view(z.size(0), -1))


# name -> (factory, input shape with the batch dim)
E2E_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "lenet5": (lenet5, (1, 1, 28, 28)),
    "lenet300_100": (lenet300_100, (1, 1, 28, 28)),
    "resnet_tiny": (ResNetTiny, (1, 3, 16, 16)),
    "ds_cnn": (ds_cnn, (1, 1, 49, 10)),
    "conv1d_sensor": (conv1d_sensor, (1, 3, 128)),
    "inception": (InceptionNet, (1, 3, 12, 12)),
    "odd_names": (OddNames, (1, 2, 10, 10)),
    "tensor_methods": (TensorMethods, (1, 1, 12, 12)),
}

# Plain chains (every activation is used by the next layer only): the memory plan must reach
# its lower bound on these.
PLAIN_CHAINS = ("lenet5", "lenet300_100", "conv1d_sensor", "ds_cnn")

# Parameter counts of the reference models (as published).
PARAM_COUNTS = {"lenet5": 431_080, "lenet300_100": 266_610}


# ---- a trained-like state ---------------------------------------------------------------------


class DataDependent(nn.Module):
    """Untraceable: Python control flow on a tensor value (neither torch.fx nor torch.export takes it);
    tests/test_errors.py and tests/test_frontend.py check the error names this line."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def _weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


@torch.no_grad()
def make_trained_like(model: nn.Module, seed: int = 0, sparsity: float = 0.7) -> nn.Module:
    """Puts ``model`` (in place; also returned, in eval mode) in a trained-like state.

    - weights and biases: seeded uniform init of the usual fan-in scale, biases nonzero;
    - BatchNorm: running_mean ~ N(0, 0.3), running_var ~ U(0.5, 2), weight ~ U(0.5, 1.5),
      bias ~ N(0, 0.2) — far from the defaults so folding errors would show;
    - pruning: every conv/linear weight loses its ``sparsity`` fraction of smallest |w|, except
      the first weighted layer (only 10%, so CSR is larger and "csr" keeps it dense: a mix of
      encodings) and the last (one output row entirely zero: an empty CSR row).
    """
    g = torch.Generator().manual_seed(seed)

    def uniform(shape: torch.Size, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(shape, generator=g) * (hi - lo) + lo

    layers = _weighted_layers(model)
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            bound = (3.0 / fan_in) ** 0.5  # unit variance outputs for unit variance inputs
            m.weight.copy_(uniform(m.weight.shape, -bound, bound))
            if m.bias is not None:
                m.bias.copy_(uniform(m.bias.shape, -0.2, 0.2))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
            m.running_var.copy_(uniform(m.running_var.shape, 0.5, 2.0))
            if m.affine:
                m.weight.copy_(uniform(m.weight.shape, 0.5, 1.5))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            m.num_batches_tracked.fill_(100)
    for i, (_, m) in enumerate(layers):
        w = m.weight
        frac = 0.1 if i == 0 and len(layers) > 1 else sparsity
        k = int(frac * w.numel())
        if k:
            thresh = w.abs().flatten().kthvalue(k).values
            w.masked_fill_(w.abs() <= thresh, 0.0)
        if i == len(layers) - 1 and w.shape[0] > 1:
            w[w.shape[0] // 2].zero_()  # an empty CSR row
    return model.eval()


def build_model(name: str, seed: int = 0, sparsity: float = 0.7) -> tuple[nn.Module, torch.Tensor]:
    """The named model in a trained-like state and a seeded sample input of its input shape."""
    factory, shape = E2E_MODELS[name]
    torch.manual_seed(seed)
    model = make_trained_like(factory(), seed, sparsity)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    return model, x


def sample_inputs(name: str, n: int = 8, seed: int = 1234) -> torch.Tensor:
    """``n`` seeded random inputs (n, ...) for the named model."""
    shape = E2E_MODELS[name][1]
    return torch.randn((n, *shape[1:]), generator=torch.Generator().manual_seed(seed))
