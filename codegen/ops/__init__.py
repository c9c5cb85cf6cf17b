"""One module per op family: the IR dataclass, its lowering(s), its kernel choice and its int8 form
(quantization + bit-exact numpy reference) side by side. Importing this package registers every
family's lowerings (``codegen.lowering.LOWERINGS``) and int8 handlers (``codegen.integer.INT8_HANDLERS``).

To add an op, see docs/architecture.md ("Adding an op").
"""

from codegen.ops.activation import Act
from codegen.ops.batchnorm import ChannelAffine
from codegen.ops.broadcast import Broadcast
from codegen.ops.conv import Conv2d
from codegen.ops.deconv import ConvTranspose2d
from codegen.ops.eltwise import Binary, Concat
from codegen.ops.gather import Gather
from codegen.ops.linear import Linear
from codegen.ops.matmul import MatMul
from codegen.ops.norm import GroupNorm, LayerNorm
from codegen.ops.pad import Pad2d
from codegen.ops.pool import Pool2d
from codegen.ops.recurrent import Recurrent
from codegen.ops.reduce import AdaptivePool, Reduce
from codegen.ops.resize import Resize
from codegen.ops.softmax import Softmax, SoftmaxAxis
from codegen.ops.unary import PReLU, Unary
from codegen.ops.view import Copy

__all__ = ["Act", "AdaptivePool", "Binary", "Broadcast", "ChannelAffine", "Concat", "Conv2d", "ConvTranspose2d", "Copy",
           "Gather", "GroupNorm", "LayerNorm", "Linear", "MatMul", "Pad2d", "Pool2d", "PReLU", "Recurrent", "Reduce", "Resize",
           "Softmax", "SoftmaxAxis", "Unary"]
