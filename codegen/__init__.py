"""codegen: PyTorch model -> typed IR -> exact-size encodings -> static memory plan -> plain C99.

Example:
    >>> import torch
    >>> from codegen import save_compressed_model, weight_bytes
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    >>> weight_bytes(net, torch.zeros(1, 4)).total   # 12 weights + 3 biases, float32
    60
"""

import codegen.ops  # noqa: F401 - registers every op family's lowerings and int8 forms
from codegen.api import (
    ByteReport,
    EmitResult,
    VerifyResult,
    build_graph,
    save_compressed_model,
    verify,
    weight_bytes,
)
from codegen.early_exit import save_compressed_early_exit_model, verify_early_exit
from codegen.errors import (
    CodegenError,
    UnsupportedConfigError,
    UnsupportedOpError,
    UntraceableModelError,
)
from codegen.integer import Int8Handler, register_int8
from codegen.lowering import register_lowering

__version__ = "0.1.0"

__all__ = [
    "ByteReport",
    "CodegenError",
    "EmitResult",
    "Int8Handler",
    "UnsupportedConfigError",
    "UnsupportedOpError",
    "UntraceableModelError",
    "VerifyResult",
    "build_graph",
    "register_int8",
    "register_lowering",
    "save_compressed_early_exit_model",
    "save_compressed_model",
    "verify",
    "verify_early_exit",
    "weight_bytes",
]
