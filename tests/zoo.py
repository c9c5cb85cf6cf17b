"""The model zoo: real architectures nobody on this team wrote, with random weights (issue 14).

Three sources, each model built small enough for CI (reduced widths, num_classes=10, small inputs):

* timm (pinned in constraints.txt, installed by ``make venv``): the library's own definitions via
  ``timm.create_model(name, pretrained=False)`` - never copies;
* torchvision (pinned likewise): ``torchvision.models.<name>(weights=None)``;
* standard TinyML blocks written as plain ``nn.Module``s the way users write them (LSTM/GRU keyword
  spotters taking ``y[:, -1]``, a TCN with chomp slicing, UNets, SE/CBAM, DS-CNN, the MLPerf Tiny
  models).

Every model gets non-trivial BatchNorm statistics and affine parameters (``randomize_batchnorm``)
so BatchNorm folding is exercised. ``ZOO`` maps a name to a ``ZooEntry``; ``build(name)`` returns
``(model in eval mode, sample inputs (N, ...))``.

torchvision import shim
-----------------------
PyPI's torchvision wheel is the CUDA build: its C++ extension ``torchvision/_C.so`` links
``libc10_cuda.so``/``libtorch_cuda.so``, which the CPU torch wheel this project uses does not have.
torchvision then runs without its C++ ops (``extension._has_ops()`` is False, which it supports),
but ``torchvision/_meta_registrations.py`` registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` unconditionally, and that fails with "operator torchvision::nms does not
exist". ``import_torchvision()`` first imports torchvision as it is (a matching build imports
unchanged); only on that exact error it drops the half-imported modules, declares the schemas of
these two operators (no kernels: calling them still fails, as any torchvision op without ``_C``)
and imports again. The model definitions are pure Python and unaffected. timm imports
torchvision, so ``import_timm()`` goes through the shim.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from helpers import randomize_batchnorm
from torch import nn

# The schemas torchvision's C++ extension would have defined (torchvision/csrc/ops/nms.cpp).
_TORCHVISION_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_shim_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the schemas


def import_torchvision():
    """Imports torchvision; without its C++ ops (CUDA wheel beside a CPU torch) through the shim above."""
    global _shim_library
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc) or _shim_library is not None:
            raise
        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[mod]
        _shim_library = torch.library.Library("torchvision", "DEF")
        for schema in _TORCHVISION_OP_SCHEMAS:
            _shim_library.define(schema)
        import torchvision
    return torchvision


def import_timm():
    import_torchvision()
    import timm

    return timm


# ---- standard TinyML blocks, written the way users write them ------------------------------------
class RNNKWS(nn.Module):
    """Keyword spotter: MFCC frames (T, F) -> nn.LSTM or nn.GRU (batch_first) -> last step -> classes."""

    def __init__(self, cell: type[nn.Module], n_mfcc: int = 10, hidden: int = 32, layers: int = 1,
                 classes: int = 12):  # fmt: skip
        super().__init__()
        self.rnn = cell(n_mfcc, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


class CRNNKWS(nn.Module):
    """Conv front end + GRU (the CRNN of Hello Edge): (1, 1, T, F) -> conv -> reshape to (T', C*F') -> GRU."""

    def __init__(self, classes: int = 12):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, (5, 3), stride=(2, 1), padding=(2, 1))
        self.bn = nn.BatchNorm2d(8)
        self.gru = nn.GRU(8 * 10, 32, batch_first=True)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))  # (1, 8, T', 10)
        x = x.permute(0, 2, 1, 3).flatten(2)  # (1, T', 80)
        y, _ = self.gru(x)
        return self.fc(y[:, -1])


class Chomp1d(nn.Module):
    """The TCN reference implementation's causal trim (Bai et al. 2018)."""

    def __init__(self, chomp: int):
        super().__init__()
        self.chomp = chomp

    def forward(self, x):
        return x[:, :, : -self.chomp].contiguous()


class TemporalBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int, k: int = 3):
        super().__init__()
        pad = (k - 1) * dilation
        self.net = nn.Sequential(
            nn.Conv1d(cin, cout, k, padding=pad, dilation=dilation), Chomp1d(pad), nn.ReLU(),
            nn.Conv1d(cout, cout, k, padding=pad, dilation=dilation), Chomp1d(pad), nn.ReLU(),
        )  # fmt: skip
        self.downsample = nn.Conv1d(cin, cout, 1) if cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.net(x)
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


class TCN(nn.Module):
    def __init__(self, cin: int = 3, channels: tuple[int, ...] = (16, 16, 16), classes: int = 6):
        super().__init__()
        layers, c = [], cin
        for i, cout in enumerate(channels):
            layers.append(TemporalBlock(c, cout, 2**i))
            c = cout
        self.tcn = nn.Sequential(*layers)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(self.tcn(x)[:, :, -1])


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )  # fmt: skip


class UNet(nn.Module):
    """A two-level UNet (milesial/Pytorch-UNet style); ``transposed`` picks ConvTranspose2d over nn.Upsample."""

    def __init__(self, cin: int = 1, classes: int = 2, base: int = 8, transposed: bool = False):
        super().__init__()
        self.inc = _double_conv(cin, base)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), _double_conv(base, 2 * base))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), _double_conv(2 * base, 4 * base))
        if transposed:
            self.up1 = nn.ConvTranspose2d(4 * base, 2 * base, 2, stride=2)
            self.up2 = nn.ConvTranspose2d(2 * base, base, 2, stride=2)
            c1, c2 = 4 * base, 2 * base
        else:
            self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.up2 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            c1, c2 = 6 * base, 3 * base
        self.conv1 = _double_conv(c1, 2 * base)
        self.conv2 = _double_conv(c2, base)
        self.outc = nn.Conv2d(base, classes, 1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        y = self.conv1(torch.cat([x2, self.up1(x3)], dim=1))
        y = self.conv2(torch.cat([x1, self.up2(y)], dim=1))
        return self.outc(y)


class SELayer(nn.Module):
    """Squeeze-and-excitation as in the SENet reference code (hujie-frank/SENet, moskomule/senet.pytorch)."""

    def __init__(self, channel: int, reduction: int = 4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False), nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class SEConv(nn.Module):
    """Squeeze-and-excitation with 1x1 convs (the MobileNetV3/EfficientNet form)."""

    def __init__(self, channel: int, reduction: int = 4):
        super().__init__()
        self.fc1 = nn.Conv2d(channel, channel // reduction, 1)
        self.fc2 = nn.Conv2d(channel // reduction, channel, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class ChannelAttention(nn.Module):
    def __init__(self, channel: int, ratio: int = 4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(nn.Conv2d(channel, channel // ratio, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(channel // ratio, channel, 1, bias=False))  # fmt: skip
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))


class SpatialAttention(nn.Module):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        return self.sigmoid(self.conv(torch.cat([avg_out, max_out], dim=1)))


class CBAM(nn.Module):
    """CBAM (Woo et al. 2018) as in its reference code (Jongchan/attention-module, luuuyi/CBAM.PyTorch)."""

    def __init__(self, channel: int):
        super().__init__()
        self.ca = ChannelAttention(channel)
        self.sa = SpatialAttention()

    def forward(self, x):
        x = self.ca(x) * x
        return self.sa(x) * x


class AttentionCNN(nn.Module):
    """A small CNN with an attention block after each stage (SELayer, SEConv or CBAM)."""

    def __init__(self, block: Callable[[int], nn.Module], cin: int = 3, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.att1 = block(16)
        self.stage = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32),
                                   nn.ReLU())  # fmt: skip
        self.att2 = block(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.att1(self.stem(x))
        x = self.att2(self.stage(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def ds_cnn_kws(classes: int = 12) -> nn.Module:
    """DS-CNN-S of Hello Edge / MLPerf Tiny keyword spotting: 49x10 MFCC, 64 channels, 4 DS blocks."""

    def ds(c: int) -> list[nn.Module]:
        return [nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]  # fmt: skip

    return nn.Sequential(
        nn.Conv2d(1, 64, (10, 4), stride=2, padding=(5, 1), bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        *ds(64), *ds(64), *ds(64), *ds(64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
    )  # fmt: skip


class ResBlock8(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.short(x))


def resnet8_tiny(classes: int = 10) -> nn.Module:
    """MLPerf Tiny image classification ResNet-8 (CIFAR-10, 32x32)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        ResBlock8(16, 16, 1), ResBlock8(16, 32, 2), ResBlock8(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
    )  # fmt: skip


def mobilenet_v1_vww(alpha: float = 0.25, classes: int = 2) -> nn.Module:
    """MLPerf Tiny visual wake words MobileNetV1 (alpha 0.25)."""

    def c(n: int) -> int:
        return max(8, int(n * alpha))

    def dw(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]  # fmt: skip

    cfg = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
           *[(512, 512, 1)] * 5, (512, 1024, 2), (1024, 1024, 1)]  # fmt: skip
    layers: list[nn.Module] = [nn.Conv2d(3, c(32), 3, 2, 1, bias=False), nn.BatchNorm2d(c(32)), nn.ReLU(inplace=True)]
    for cin, cout, s in cfg:
        layers += dw(c(cin), c(cout), s)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c(1024), classes)]
    return nn.Sequential(*layers)


def fc_autoencoder(n: int = 128) -> nn.Module:
    """MLPerf Tiny anomaly detection (ToyADMOS) dense autoencoder, narrowed: Linear-BN-ReLU blocks."""
    dims = [n, 64, 64, 8, 64, 64]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], n))
    return nn.Sequential(*layers)


# ---- the registry --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZooEntry:
    name: str
    source: str  # "timm", "torchvision" or "tinyml"
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]  # one sample, batch dim included


def _timm(name: str, **kw) -> Callable[[], nn.Module]:
    def make():
        return import_timm().create_model(name, pretrained=False, num_classes=10, **kw)

    return make


def _tv(name: str, **kw) -> Callable[[], nn.Module]:
    def make():
        return getattr(import_torchvision().models, name)(weights=None, **kw)

    return make


_IMG = (1, 3, 32, 32)
_IMG64 = (1, 3, 64, 64)
_ENTRIES = [
    # timm
    ZooEntry("timm_mobilenetv2_035", "timm", _timm("mobilenetv2_035"), _IMG),
    ZooEntry("timm_mobilenetv2_050", "timm", _timm("mobilenetv2_050"), _IMG),
    ZooEntry("timm_mobilenetv3_small_050", "timm", _timm("mobilenetv3_small_050"), _IMG),
    ZooEntry("timm_mobilenetv3_small_075", "timm", _timm("mobilenetv3_small_075"), _IMG),
    ZooEntry("timm_mobilenetv3_large_075", "timm", _timm("mobilenetv3_large_075"), _IMG),
    ZooEntry("timm_mobilenetv4_conv_small_035", "timm", _timm("mobilenetv4_conv_small_035"), _IMG),
    ZooEntry("timm_mobilenetv4_conv_small_050", "timm", _timm("mobilenetv4_conv_small_050"), _IMG),
    ZooEntry("timm_lcnet_035", "timm", _timm("lcnet_035"), _IMG),
    ZooEntry("timm_lcnet_050", "timm", _timm("lcnet_050"), _IMG),
    ZooEntry("timm_mnasnet_small", "timm", _timm("mnasnet_small"), _IMG),
    ZooEntry("timm_mnasnet_050", "timm", _timm("mnasnet_050"), _IMG),
    ZooEntry("timm_semnasnet_050", "timm", _timm("semnasnet_050"), _IMG),
    ZooEntry("timm_efficientnet_lite0", "timm", _timm("efficientnet_lite0"), _IMG),
    ZooEntry("timm_tf_efficientnet_lite0", "timm", _timm("tf_efficientnet_lite0"), _IMG),
    ZooEntry("timm_tinynet_e", "timm", _timm("tinynet_e"), _IMG),
    ZooEntry("timm_ghostnet_050", "timm", _timm("ghostnet_050"), _IMG),
    ZooEntry("timm_regnetx_002", "timm", _timm("regnetx_002"), _IMG),
    ZooEntry("timm_mobileone_s0", "timm", _timm("mobileone_s0"), _IMG),
    ZooEntry("timm_repghostnet_050", "timm", _timm("repghostnet_050"), _IMG),
    ZooEntry("timm_fbnetc_100", "timm", _timm("fbnetc_100"), _IMG),
    ZooEntry("timm_spnasnet_100", "timm", _timm("spnasnet_100"), _IMG),
    # torchvision
    ZooEntry("tv_mobilenet_v2_035", "torchvision", _tv("mobilenet_v2", width_mult=0.35, num_classes=10), _IMG),
    ZooEntry("tv_mobilenet_v3_small", "torchvision", _tv("mobilenet_v3_small", width_mult=0.5, num_classes=10), _IMG),
    ZooEntry("tv_mobilenet_v3_large", "torchvision", _tv("mobilenet_v3_large", width_mult=0.5, num_classes=10), _IMG),
    ZooEntry("tv_squeezenet1_0", "torchvision", _tv("squeezenet1_0", num_classes=10), _IMG64),
    ZooEntry("tv_squeezenet1_1", "torchvision", _tv("squeezenet1_1", num_classes=10), _IMG64),
    ZooEntry("tv_shufflenet_v2_x0_5", "torchvision", _tv("shufflenet_v2_x0_5", num_classes=10), _IMG),
    ZooEntry("tv_mnasnet0_5", "torchvision", _tv("mnasnet0_5", num_classes=10), _IMG),
    # standard TinyML blocks
    ZooEntry("lstm_kws_1layer", "tinyml", lambda: RNNKWS(nn.LSTM, layers=1), (1, 20, 10)),
    ZooEntry("lstm_kws_2layer", "tinyml", lambda: RNNKWS(nn.LSTM, layers=2), (1, 20, 10)),
    ZooEntry("gru_kws_1layer", "tinyml", lambda: RNNKWS(nn.GRU, layers=1), (1, 20, 10)),
    ZooEntry("gru_kws_2layer", "tinyml", lambda: RNNKWS(nn.GRU, layers=2), (1, 20, 10)),
    ZooEntry("crnn_kws", "tinyml", CRNNKWS, (1, 1, 20, 10)),
    ZooEntry("tcn", "tinyml", TCN, (1, 3, 64)),
    ZooEntry("unet_upsample", "tinyml", lambda: UNet(transposed=False), (1, 1, 16, 16)),
    ZooEntry("unet_convtranspose", "tinyml", lambda: UNet(transposed=True), (1, 1, 16, 16)),
    ZooEntry("se_cnn", "tinyml", lambda: AttentionCNN(SELayer), (1, 3, 16, 16)),
    ZooEntry("se_conv_cnn", "tinyml", lambda: AttentionCNN(SEConv), (1, 3, 16, 16)),
    ZooEntry("cbam_cnn", "tinyml", lambda: AttentionCNN(CBAM), (1, 3, 16, 16)),
    ZooEntry("ds_cnn_kws", "tinyml", ds_cnn_kws, (1, 1, 49, 10)),
    ZooEntry("resnet8_mlperf_tiny", "tinyml", resnet8_tiny, (1, 3, 32, 32)),
    ZooEntry("mobilenet_v1_025_vww", "tinyml", mobilenet_v1_vww, (1, 3, 64, 64)),
    ZooEntry("fc_autoencoder", "tinyml", fc_autoencoder, (1, 128)),
]
ZOO: dict[str, ZooEntry] = {e.name: e for e in _ENTRIES}


def build(name: str, n_inputs: int = 3, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The zoo model ``name`` (eval mode, seeded random weights and BatchNorm statistics) and
    ``n_inputs`` random samples of its input shape, stacked on dim 0."""
    entry = ZOO[name]
    torch.manual_seed(seed)
    model = randomize_batchnorm(entry.make(), seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((n_inputs, *entry.input_shape[1:]), generator=gen)
    return model, x


# ---- the parity bound of the zoo (tests/test_zoo.py and benchmarks/zoo.py use this one helper) -----------


def fp32_noise(model: nn.Module, x: torch.Tensor, reference) -> float:
    """PyTorch's own float32 rounding noise on ``x``: max |fp32 reference - fp64 result|.

    Random weights and BatchNorm statistics make some nets ill-conditioned: PyTorch's float32 result then
    strays from float64 by more than ``codegen.api.default_tolerance`` (timm_semnasnet_050: 2.5 on outputs
    of 2,800), and any float32 implementation (the C) strays as much.
    """
    with torch.no_grad():
        ref64 = copy.deepcopy(model).double().eval()(x.double()).numpy()
    ref = np.asarray(reference, dtype=np.float64).reshape(ref64.shape)
    return float(np.max(np.abs(ref - ref64)))


def parity_bound(model: nn.Module, x: torch.Tensor, reference, tolerance: float) -> tuple[float, float]:
    """(bound, noise): the C must match PyTorch's float32 ``reference`` on ``x`` within ``tolerance``
    (``codegen.api.default_tolerance``) plus twice PyTorch's own fp32-vs-fp64 noise (``fp32_noise``)."""
    noise = fp32_noise(model, x, reference)
    return tolerance + 2 * noise, noise
