"""The Deep Compression stages as commands (Deep-Compression-PyTorch's pruning.py, weight_share.py,
huffman_encode.py, huffman_decode.py and compare_stages.py), over sparsecomp's own functions:

    sparsecomp prune MOD:FACTORY --weights W.pt [--data DATA] --sensitivity 0.25 --epochs 1 -o pruned.pt
    sparsecomp share MOD:FACTORY --weights pruned.pt [--data DATA] --bits 5 --epochs 1 -o shared.pt
    sparsecomp huffman-encode shared.pt -o model.schf [--model MOD:FACTORY]
    sparsecomp huffman-decode model.schf -o decoded.pt [--model MOD:FACTORY]
    sparsecomp compare-stages MOD:FACTORY --weights shared.pt --input-shape 1,1,28,28

``prune`` is ``ThresholdPruner(sensitivity)`` (threshold std(weight) x sensitivity per layer) then, with
``--data``, ``--epochs`` of retraining with the masks held; ``share`` is ``share_`` (k-means, at most
2^bits values per layer, zeros kept) or, with ``--data``, ``fine_tune_shared_`` (centroid fine-tuning);
``huffman-encode`` / ``-decode`` are ``huffman_encode`` / ``huffman_decode`` (bit-exact archive);
``compare-stages`` is ``compare_stages`` (codegen's exact bytes after each stage). Outputs are state_dicts
of the factory's model (torch.save), written atomically; an existing file is replaced only with
``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)


def _cli():
    from . import cli

    return cli


def _load_state(path: str | os.PathLike) -> dict:
    """A state_dict from a torch.save file (or a Huffman archive of ``sparsecomp huffman-encode``)."""
    import torch

    from .huffman import MAGIC, ArchiveError, huffman_decode

    p = Path(path)
    if not p.is_file():
        raise _cli().CLIError(f"weights file {p} does not exist")
    with open(p, "rb") as f:
        head = f.read(4)
    if head == MAGIC:
        try:
            return dict(huffman_decode(p))
        except ArchiveError as exc:
            raise _cli().CLIError(str(exc)) from exc
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise _cli().CLIError(f"cannot load {p} with torch.load(weights_only=True): {exc}; save "
                              "model.state_dict() with torch.save and pass that file") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise _cli().CLIError(f"{p} does not hold a state_dict")
    return state


def _load_model(spec: str, weights: str | None):
    import torch

    cli = _cli()
    model = cli._load_factory(spec)()
    if not isinstance(model, torch.nn.Module):
        raise cli.CLIError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    if weights:
        try:
            model.load_state_dict(_load_state(weights))
        except RuntimeError as exc:
            raise cli.CLIError(f"{weights} does not match {spec}(): {exc}") from exc
    return model


def _check_out(path: str | os.PathLike, overwrite: bool) -> Path:
    p = Path(path)
    if p.exists() and not overwrite:
        raise _cli().CLIError(f"{p} exists; pass --overwrite to replace it")
    if p.exists() and not p.is_file():
        raise _cli().CLIError(f"{p} is not a file")
    if not p.parent.is_dir():
        raise _cli().CLIError(f"directory {p.parent} does not exist")
    return p


def _atomic_save(obj, path: Path) -> None:
    import torch

    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _accuracy(model, loader) -> float | None:
    from .training import evaluate

    return None if loader is None else evaluate(model, loader)


def _fmt_acc(a: float | None) -> str:
    return "n/a (no --data)" if a is None else f"{100 * a:.2f} %"


def _begin_stage(args: argparse.Namespace):
    """What the prune and share stages start from: the checked output path, the model with its weights,
    the training and test loaders (None without --data) and the test accuracy before the stage."""
    import torch

    out = _check_out(args.output, args.overwrite)
    torch.manual_seed(args.seed)
    model = _load_model(args.model, args.weights)
    train, _val, test = _cli()._load_data(args.data, args.batch_size, args.seed) if args.data else (None, None, None)
    return out, model, train, test, _accuracy(model, test)


def _end_stage(model, out: Path) -> int:
    _atomic_save(model.state_dict(), out)
    print(f"wrote {out}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .pruning import ThresholdPruner, find_compressible_layers
    from .training import split_batch

    out, model, train, test, before = _begin_stage(args)
    pruner = ThresholdPruner(sensitivity=args.sensitivity)
    sparsity = pruner.prune(model)
    pruned = _accuracy(model, test)
    if train is not None and args.epochs > 0:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        pruner.attach(opt)
        model.train()
        try:
            for ep in range(args.epochs):
                for batch in tqdm(train, desc=f"retrain epoch {ep + 1}/{args.epochs}", disable=args.quiet,
                                  leave=False):  # fmt: skip
                    x, y = split_batch(batch)
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    opt.step()
        finally:
            pruner.detach()
        pruner.apply()
    model.eval()
    after = _accuracy(model, test)
    for name in find_compressible_layers(model):
        key = f"{name}.weight"
        if key in sparsity:
            w = model.get_submodule(name).weight
            print(f"{key:<32} sparsity {100 * float((w == 0).float().mean()):6.2f} %  ({int((w != 0).sum())} of "
                  f"{w.numel()} kept)")
    print(f"accuracy: before {_fmt_acc(before)}, pruned {_fmt_acc(pruned)}, retrained {_fmt_acc(after)}")
    return _end_stage(model, out)


def cmd_share(args: argparse.Namespace) -> int:
    import torch

    from .pruning import find_compressible_layers
    from .weight_sharing import WeightSharingError, fine_tune_shared_, share_

    out, model, train, test, before = _begin_stage(args)
    try:
        if train is not None and args.epochs > 0:
            fine_tune_shared_(model, train, bits=args.bits, epochs=args.epochs, lr=args.lr)
        else:
            share_(model, args.bits)
    except WeightSharingError as exc:
        raise _cli().CLIError(str(exc)) from exc
    model.eval()
    after = _accuracy(model, test)
    for name, m in find_compressible_layers(model).items():
        w = m.weight.detach()
        print(f"{name + '.weight':<32} {int(torch.unique(w[w != 0]).numel()):4d} shared values "
              f"(at most {2 ** args.bits})")
    print(f"accuracy: before {_fmt_acc(before)}, shared {_fmt_acc(after)}")
    return _end_stage(model, out)


def cmd_huffman_encode(args: argparse.Namespace) -> int:
    from .huffman import huffman_encode

    out = _check_out(args.output, args.overwrite)
    state = _load_model(args.model, args.weights).state_dict() if args.model else _load_state(args.weights)
    n = huffman_encode(state, out)
    size = Path(args.weights).stat().st_size
    print(f"wrote {out}: {n} bytes ({size} bytes in {args.weights}, {100 * n / max(size, 1):.1f} %)")
    return 0


def cmd_huffman_decode(args: argparse.Namespace) -> int:
    from .huffman import ArchiveError, huffman_decode

    out = _check_out(args.output, args.overwrite)
    try:
        state = huffman_decode(args.archive)
    except (ArchiveError, OSError) as exc:
        raise _cli().CLIError(str(exc)) from exc
    if args.model:
        model = _load_model(args.model, None)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise _cli().CLIError(f"{args.archive} does not match {args.model}(): {exc}") from exc
    _atomic_save(dict(state), out)
    print(f"wrote {out}: {len(state)} tensors")
    return 0


def cmd_compare_stages(args: argparse.Namespace) -> int:
    import torch

    from .huffman import compare_stages

    model = _load_model(args.model, args.weights).eval()
    rep = compare_stages(model, torch.zeros(args.input_shape))
    print(rep)
    if args.json:
        Path(args.json).write_text(json.dumps({"totals": rep.totals(), "layers": [vars(r) for r in rep.rows]},
                                              indent=2) + "\n")  # fmt: skip
    return 0


def _huffman_args(p, name: str, metavar: str, out: str, model_help: str, help: str | None = None) -> None:
    """The input, -o OUTPUT, --model and --overwrite of huffman-encode and huffman-decode."""
    p.add_argument(name, metavar=metavar, help=help)
    p.add_argument("-o", "--output", required=True, metavar=out)
    p.add_argument("--model", metavar="PACKAGE.MODULE:FACTORY", help=model_help)
    p.add_argument("--overwrite", action="store_true", help=f"replace {out} if it exists")


def add_parsers(sub) -> None:
    """Adds prune, share, huffman-encode, huffman-decode and compare-stages to the ``sparsecomp`` parser."""
    cli = _cli()

    def common(p, data: bool = True) -> None:
        p.add_argument("model", metavar="PACKAGE.MODULE:FACTORY", help="callable returning the nn.Module")
        p.add_argument("--weights", required=True, metavar="W.pt",
                       help="its state_dict (torch.save) or a Huffman archive of huffman-encode")
        if data:
            p.add_argument("--data", metavar="DATA",
                           help="training/test data (as for `sparsecomp compress`): PACKAGE.MODULE:CALLABLE returning "
                                "(train, val, test) or (train, test) DataLoaders, an MNIST directory or a .pt file of "
                                "{'x', 'y'}; without it there is no retraining and no accuracy")
            p.add_argument("--epochs", type=int, default=1, help="retraining epochs with --data (default 1)")
            p.add_argument("--lr", type=float, default=1e-4, help="learning rate of the retraining (default 1e-4)")
            p.add_argument("--batch-size", type=int, default=64, help="batch size for a data file or directory")
            p.add_argument("--seed", type=int, default=0, help="seed of the data split and the training (default 0)")
            p.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="where the state_dict goes")
            p.add_argument("--overwrite", action="store_true", help="replace OUT.pt if it exists")
            p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("prune", help="threshold pruning (Deep Compression stage 1), optionally retrained",
                       description="Prune every Conv/Linear weight below std(weight) x SENSITIVITY (ThresholdPruner), "
                                   "then retrain --epochs on --data with the masks held. Deep-Compression-PyTorch's "
                                   "pruning.py.")
    common(p)
    p.add_argument("--sensitivity", type=float, default=0.25,
                   help="threshold = std(weight) x sensitivity, per layer (default 0.25; Deep-Compression-PyTorch's "
                        "default 2 prunes about 95 %% of a Gaussian layer)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("share", help="k-means weight sharing (Deep Compression stage 2)",
                       description="Share every Conv/Linear weight among at most 2^BITS k-means centroids (zeros "
                                   "kept); with --data, fine-tune the centroids --epochs. Deep-Compression-PyTorch's "
                                   "weight_share.py.")
    common(p)
    p.add_argument("--bits", type=int, default=5, help="bits per shared value index, 1..8 (default 5)")
    p.set_defaults(func=cmd_share)

    p = sub.add_parser("huffman-encode", help="Huffman archive of a state_dict (Deep Compression stage 3)",
                       description="Write a bit-exact Huffman archive (sparse tensors as Huffman-coded value indices "
                                   "and gaps) of W.pt. Deep-Compression-PyTorch's huffman_encode.py.")
    _huffman_args(p, "weights", "W.pt", "ARCHIVE", "check W.pt loads into this model first",
                  help="a state_dict saved with torch.save")
    p.set_defaults(func=cmd_huffman_encode)

    p = sub.add_parser("huffman-decode", help="a state_dict from a Huffman archive",
                       description="Decode an archive of huffman-encode back to a state_dict (bit-exact). "
                                   "Deep-Compression-PyTorch's huffman_decode.py.")
    _huffman_args(p, "archive", "ARCHIVE", "OUT.pt", "check the state_dict loads into this model")
    p.set_defaults(func=cmd_huffman_decode)

    p = sub.add_parser("compare-stages", help="exact bytes after pruning, weight sharing and Huffman coding",
                       description="Per layer: bytes emitted as float CSR, as codebook forms and in the Huffman "
                                   "archive (codegen's exact counts). Deep-Compression-PyTorch's compare_stages.py.")
    common(p, data=False)
    p.add_argument("--input-shape", required=True, type=cli._parse_shape, metavar="N,C,H,W",
                   help="example input shape with the batch dimension, e.g. 1,1,28,28")
    p.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    p.set_defaults(func=cmd_compare_stages)
