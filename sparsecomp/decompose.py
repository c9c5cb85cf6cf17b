"""Layer separation: low-rank factorizations of Conv2d and Linear layers.

* Conv2d -> Tucker-2 (Kim et al. 2016): 1x1 conv (C_in -> r_in), kxk core conv
  (r_in -> r_out, original stride/padding/dilation), 1x1 conv (r_out -> C_out, original bias).
  Ranks from VBMF (:mod:`sparsecomp.vbmf`) unless given.
* Conv2d -> CP (Lebedev et al. 2015), optional: 1x1, (kh x 1) depthwise, (1 x kw) depthwise, 1x1.
* Linear -> truncated SVD: Linear(in -> r, no bias), Linear(r -> out, original bias).

Tensorly runs on its pytorch backend inside :func:`tensorly_backend` only; the caller's
global tensorly backend is restored afterwards.  Every function raises
:class:`DecompositionError` on failure; nothing is swallowed.

Example::

    >>> import torch, torch.nn as nn
    >>> conv = nn.Conv2d(8, 16, 3, padding=1)
    >>> seq = tucker2_conv(conv, ranks=(16, 8))        # full ranks: exact
    >>> x = torch.randn(2, 8, 6, 6)
    >>> bool(torch.allclose(seq(x), conv(x), atol=1e-4))
    True
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
import torch.nn as nn

from .vbmf import tucker2_ranks

logger = logging.getLogger(__name__)


class DecompositionError(RuntimeError):
    """A layer could not be factorized (bad layer type, numerical failure, ...)."""


@contextlib.contextmanager
def tensorly_backend(name: str = "pytorch") -> Iterator[None]:
    """Use tensorly backend ``name`` inside the block, restoring the previous one after."""
    import tensorly as tl

    previous = tl.get_backend()
    try:
        with tl.backend_context(name):
            yield
    finally:
        if tl.get_backend() != previous:  # pragma: no cover - defensive
            tl.set_backend(previous)


def _check_finite(name: str, *tensors: torch.Tensor) -> None:
    for t in tensors:
        if not torch.isfinite(t).all():
            raise DecompositionError(f"{name}: factorization produced NaN/Inf")


def tucker2_conv(conv: nn.Conv2d, ranks: tuple[int, int] | None = None) -> nn.Sequential:
    """Tucker-2 factorization of ``conv`` with ``ranks=(r_out, r_in)`` (VBMF when ``None``).

    Returns ``Sequential(conv1x1 C_in->r_in, core kxk r_in->r_out, conv1x1 r_out->C_out)``.
    """
    if not isinstance(conv, nn.Conv2d):
        raise DecompositionError(f"tucker2_conv needs nn.Conv2d, got {type(conv).__name__}")
    if conv.groups != 1:
        raise DecompositionError(f"tucker2_conv: grouped convolution (groups={conv.groups}) not supported")
    if conv.padding_mode != "zeros":
        raise DecompositionError(f"tucker2_conv: padding_mode={conv.padding_mode!r} not supported")
    w = conv.weight.detach().float().cpu()
    c_out, c_in = w.shape[:2]
    if ranks is None:
        try:
            ranks = tucker2_ranks(w.numpy())
        except ValueError as exc:
            raise DecompositionError(f"VBMF rank selection failed: {exc}") from exc
    r_out, r_in = int(ranks[0]), int(ranks[1])
    if not (1 <= r_out <= c_out and 1 <= r_in <= c_in):
        raise DecompositionError(f"tucker2_conv: ranks {ranks} out of range for kernel {tuple(w.shape)}")
    from tensorly.decomposition import partial_tucker

    try:
        with tensorly_backend("pytorch"):
            (core, factors), _ = partial_tucker(w, rank=[r_out, r_in], modes=[0, 1], init="svd", n_iter_max=50)
    except Exception as exc:  # tensorly raises many types; re-raise as ours, never swallow
        raise DecompositionError(f"tensorly partial_tucker failed: {exc}") from exc
    u_out, u_in = factors  # [C_out, r_out], [C_in, r_in]
    _check_finite("tucker2_conv", core, u_out, u_in)

    dev, dt = conv.weight.device, conv.weight.dtype
    first = nn.Conv2d(c_in, r_in, 1, bias=False)
    first.weight.data = u_in.t().reshape(r_in, c_in, 1, 1).contiguous()
    mid = nn.Conv2d(
        r_in, r_out, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, bias=False,
    )
    mid.weight.data = core.contiguous()
    last = nn.Conv2d(r_out, c_out, 1, bias=conv.bias is not None)
    last.weight.data = u_out.reshape(c_out, r_out, 1, 1).contiguous()
    if conv.bias is not None:
        last.bias.data = conv.bias.detach().clone().float().cpu()
    return nn.Sequential(first, mid, last).to(device=dev, dtype=dt)


def cp_conv(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """CP factorization of ``conv`` into 1x1, (kh x 1) depthwise, (1 x kw) depthwise, 1x1 convs."""
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise DecompositionError("cp_conv needs an ungrouped nn.Conv2d")
    if conv.padding_mode != "zeros":
        raise DecompositionError(f"cp_conv: padding_mode={conv.padding_mode!r} not supported")
    if isinstance(conv.padding, str):
        raise DecompositionError(f"cp_conv: string padding {conv.padding!r} not supported")
    rank = int(rank)
    if rank < 1:
        raise DecompositionError(f"cp_conv: rank must be >= 1, got {rank}")
    w = conv.weight.detach().float().cpu()
    c_out, c_in, kh, kw = w.shape
    from tensorly.decomposition import parafac

    try:
        with tensorly_backend("pytorch"):
            cp = parafac(w, rank=rank, init="random", n_iter_max=300, tol=1e-10, random_state=0)
        weights, (a_out, a_in, a_h, a_w) = cp
    except Exception as exc:
        raise DecompositionError(f"tensorly parafac failed: {exc}") from exc
    a_out = a_out * weights.unsqueeze(0)
    _check_finite("cp_conv", a_out, a_in, a_h, a_w)
    sh, sw = conv.stride
    ph, pw = conv.padding
    dh, dw = conv.dilation
    first = nn.Conv2d(c_in, rank, 1, bias=False)
    first.weight.data = a_in.t().reshape(rank, c_in, 1, 1).contiguous()
    vert = nn.Conv2d(rank, rank, (kh, 1), stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1), groups=rank, bias=False)
    vert.weight.data = a_h.t().reshape(rank, 1, kh, 1).contiguous()
    horz = nn.Conv2d(rank, rank, (1, kw), stride=(1, sw), padding=(0, pw), dilation=(1, dw), groups=rank, bias=False)
    horz.weight.data = a_w.t().reshape(rank, 1, 1, kw).contiguous()
    last = nn.Conv2d(rank, c_out, 1, bias=conv.bias is not None)
    last.weight.data = a_out.reshape(c_out, rank, 1, 1).contiguous()
    if conv.bias is not None:
        last.bias.data = conv.bias.detach().clone().float().cpu()
    return nn.Sequential(first, vert, horz, last).to(device=conv.weight.device, dtype=conv.weight.dtype)


def svd_linear(linear: nn.Linear, rank: int) -> nn.Sequential:
    """Truncated SVD of ``linear``: ``Sequential(Linear(in, rank, bias=False), Linear(rank, out))``.

    Example::

        >>> lin = nn.Linear(20, 10)
        >>> seq = svd_linear(lin, 10)                     # full rank: exact
        >>> x = torch.randn(3, 20)
        >>> bool(torch.allclose(seq(x), lin(x), atol=1e-5))
        True
    """
    if not isinstance(linear, nn.Linear):
        raise DecompositionError(f"svd_linear needs nn.Linear, got {type(linear).__name__}")
    out_f, in_f = linear.weight.shape
    rank = int(rank)
    if not 1 <= rank <= min(out_f, in_f):
        raise DecompositionError(f"svd_linear: rank {rank} out of range for weight {tuple(linear.weight.shape)}")
    w = linear.weight.detach().double().cpu()
    try:
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
    except RuntimeError as exc:
        raise DecompositionError(f"SVD failed: {exc}") from exc
    root = S[:rank].sqrt()
    a = (root.unsqueeze(1) * Vh[:rank]).float()   # [r, in]
    b = (U[:, :rank] * root.unsqueeze(0)).float()  # [out, r]
    _check_finite("svd_linear", a, b)
    first = nn.Linear(in_f, rank, bias=False)
    first.weight.data = a.contiguous()
    second = nn.Linear(rank, out_f, bias=linear.bias is not None)
    second.weight.data = b.contiguous()
    if linear.bias is not None:
        second.bias.data = linear.bias.detach().clone().float().cpu()
    return nn.Sequential(first, second).to(device=linear.weight.device, dtype=linear.weight.dtype)


def svd_energy_rank(linear: nn.Linear, energy: float) -> int:
    """Smallest rank whose singular values keep ``energy`` (0..1) of the squared Frobenius norm."""
    s = torch.linalg.svdvals(linear.weight.detach().double().cpu())
    cum = torch.cumsum(s**2, 0) / torch.sum(s**2).clamp_min(1e-30)
    return int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype)).item()) + 1


def max_useful_linear_rank(out_f: int, in_f: int, factor: float = 0.8) -> int:
    """Largest rank whose two factors hold at most ``factor`` of the original weight count."""
    return max(0, int(factor * out_f * in_f / (out_f + in_f)))


def decompose(module: nn.Module, method: str = "auto", rank: int | tuple[int, int] | None = None) -> nn.Sequential:
    """Factorize one layer: ``"tucker2"``/``"cp"`` for Conv2d, ``"svd"`` for Linear, or ``"auto"``.

    ``rank`` is required for ``"svd"`` and ``"cp"``; Tucker-2 picks VBMF ranks when ``None``.
    """
    if method == "auto":
        method = "svd" if isinstance(module, nn.Linear) else "tucker2"
    if method == "svd":
        if rank is None:
            raise DecompositionError("svd needs a rank")
        return svd_linear(module, int(rank))  # type: ignore[arg-type]
    if method == "tucker2":
        return tucker2_conv(module, rank)  # type: ignore[arg-type]
    if method == "cp":
        if rank is None:
            raise DecompositionError("cp needs a rank")
        return cp_conv(module, int(rank))  # type: ignore[arg-type]
    raise DecompositionError(f"unknown decomposition method {method!r} (tucker2, cp, svd, auto)")
