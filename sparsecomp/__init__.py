"""sparsecomp: compress trained PyTorch models to an exact byte budget for microcontrollers.

Example::

    >>> from sparsecomp import compress_NN_models                     # doctest: +SKIP
    >>> report = compress_NN_models(model, 100, train_loader, test_loader,
    ...                             val_loader=val_loader)            # doctest: +SKIP
    >>> print(report)                                                 # doctest: +SKIP

The model is changed in place; ``codegen.save_compressed_model`` on it then emits at most
100 KB (100,000 bytes) of const weight data, exactly as counted.
"""

from .allocation import UnreachableBudget, allocate
from .budget import parse_size
from .compress import BudgetError, CompressionError, compress_NN_models
from .data import load_digits, load_mnist
from .decompose import DecompositionError, cp_conv, decompose, svd_linear, tucker2_conv
from .pruning import LevelPruner, MaskedPruner, ThresholdPruner, find_compressible_layers
from .report import CompressionReport
from .sensitivity import SensitivityResult, sensitivity_analysis
from .vbmf import evbmf, evbmf_rank, tucker2_ranks

__version__ = "0.1.0"

__all__ = [
    "BudgetError",
    "CompressionError",
    "CompressionReport",
    "DecompositionError",
    "LevelPruner",
    "MaskedPruner",
    "SensitivityResult",
    "ThresholdPruner",
    "UnreachableBudget",
    "allocate",
    "compress_NN_models",
    "cp_conv",
    "decompose",
    "evbmf",
    "evbmf_rank",
    "find_compressible_layers",
    "load_digits",
    "load_mnist",
    "parse_size",
    "sensitivity_analysis",
    "svd_linear",
    "tucker2_conv",
    "tucker2_ranks",
]

# early-exit models (issue 6)
from .early_exit import (  # noqa: E402
    EarlyExitModel,
    ExitResult,
    build_exit_model,
    evaluate_exits,
    simulate_exit,
    train_exits,
)

__all__ += ["EarlyExitModel", "ExitResult", "build_exit_model", "evaluate_exits", "simulate_exit", "train_exits"]

# quantization, weight sharing, BatchNorm folding, Huffman archives (issue 5)
from .bits import BitsResult, QuantPlan, bits_analysis  # noqa: E402
from .folding import fold_batchnorm_  # noqa: E402
from .huffman import ArchiveError, compare_stages, huffman_decode, huffman_encode  # noqa: E402
from .weight_sharing import WeightSharingError, fine_tune_shared_, share_  # noqa: E402

__all__ += ["ArchiveError", "BitsResult", "QuantPlan", "compare_stages", "huffman_decode", "huffman_encode", "WeightSharingError", "bits_analysis", "fine_tune_shared_",
            "fold_batchnorm_", "share_"]

# distiller / dnn-compression names (issue 18): the migration path, see sparsecomp/compat.py
from .compat import (  # noqa: E402
    Quantizer,
    perform_bits_analysis,
    perform_sensitivity_analysis,
    sensitivities_to_csv,
    sensitivity_to_png,
)

# dnn-compression calls it as ``bits_analysis.perform_bits_analysis`` (a module there): the same call works here
bits_analysis.perform_bits_analysis = perform_bits_analysis  # type: ignore[attr-defined]

__all__ += ["Quantizer", "perform_bits_analysis", "perform_sensitivity_analysis", "sensitivities_to_csv",
            "sensitivity_to_png"]
