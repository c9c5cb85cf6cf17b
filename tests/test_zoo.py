"""The model zoo in CI (issue 14): every real architecture of tests/zoo.py either emits C that matches
PyTorch, or is listed in EXPECTED_BLOCKED and fails with a clear CodegenError naming the reason.

When an op is added
-------------------
* a model that now emits makes ``test_blocked_model_still_fails_clearly`` fail with "move it to
  EMITS": delete its EXPECTED_BLOCKED entry and add it to EMITS (then this file checks its parity);
* a model that now fails for another reason (the next missing op) fails the same test with the new
  message: update its entry to the new reason.

docs/zoo.md (benchmarks/zoo.py, ``make zoo``) is the full table with bytes, arena and errors.
"""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest
import torch

from codegen import save_compressed_model
from codegen.errors import CodegenError, UnsupportedOpError

try:
    import zoo

    zoo.import_timm()
    _MISSING = ""
except ImportError as exc:  # timm/torchvision are installed by 'make venv' (constraints.txt)
    _MISSING = f"timm/torchvision not installed ({exc}); run 'make venv'"

if _MISSING and os.environ.get("SPARSECOMP_REQUIRE_ZOO") == "1":
    raise RuntimeError(_MISSING)  # in CI a missing zoo is a failure, not a skip
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=_MISSING)

# Models that emit today: name -> what else to run. "integer": also integer=True (bit-exact self-test);
# "board": also on the emulated Cortex-M4F (test_zoo_model_on_board, marked board).
EMITS: dict[str, set[str]] = {
    "tv_mobilenet_v2_035": {"integer"},
    "tv_squeezenet1_1": set(),
    "tv_squeezenet1_0": set(),
    "tv_mnasnet0_5": set(),
    "ds_cnn_kws": {"integer", "board"},
    "resnet8_mlperf_tiny": {"board"},
    "mobilenet_v1_025_vww": {"integer", "board"},
    "fc_autoencoder": {"integer", "board"},
    # unblocked by the functional forms, broadcasting, scalar ops and activations (codegen/ops/unary.py, broadcast.py)
    "se_conv_cnn": {"integer"},
    "timm_efficientnet_lite0": set(),  # integer: 3.98 from float on random weights, above the 8 % bound
    "timm_fbnetc_100": set(),
    "timm_lcnet_035": {"integer"},  # the fused in-place hardswish of conv_head (int8 LUT split out)
    "timm_lcnet_050": set(),
    "timm_mnasnet_050": set(),
    "timm_mnasnet_small": set(),
    "timm_mobilenetv2_035": set(),
    "timm_mobilenetv2_050": set(),
    "timm_mobilenetv3_large_075": set(),
    "timm_mobilenetv3_small_050": set(),  # integer: emits and is bit-exact; 0.82 from float, above the 8 % bound
    "timm_mobilenetv3_small_075": set(),
    "timm_mobilenetv4_conv_small_035": set(),
    "timm_mobilenetv4_conv_small_050": set(),
    "timm_mobileone_s0": set(),
    "timm_regnetx_002": set(),
    "timm_repghostnet_050": set(),
    "timm_semnasnet_050": set(),
    "timm_spnasnet_100": set(),
    "timm_tinynet_e": {"integer"},  # BatchNormAct2d's in-place SiLU ("no calibration range" before)
    "tv_mobilenet_v3_large": set(),
    "tv_mobilenet_v3_small": {"integer"},  # the classifier's Linear + in-place Hardswish
    # unblocked by slicing, chunk/transpose, expand_as (codegen/ops/gather.py)
    "tv_shufflenet_v2_x0_5": {"integer"},  # chunk, channel shuffle (view-transpose-view)
    "tcn": {"integer"},  # Chomp1d's x[:, :, :-p]
    "se_cnn": {"integer"},  # expand_as of the squeeze-excite gate
    # unblocked by upsampling, transposed convs and LSTM/GRU (codegen/ops/resize.py, deconv.py, recurrent.py)
    "unet_upsample": {"integer", "board"},
    "unet_convtranspose": {"integer", "board"},
    "lstm_kws_1layer": {"integer"},  # int8 LSTM/GRU: codegen/ops/recurrent.py RecurrentInt8
    "lstm_kws_2layer": {"integer"},
    "gru_kws_1layer": {"integer", "board"},
    "gru_kws_2layer": {"integer"},
    "crnn_kws": {"integer"},
    "timm_ghostnet_050": set(),
    "cbam_cnn": {"integer"},
    # Conv2dSame computes its padding from the input size in Python: emitted through torch.export
    "timm_tf_efficientnet_lite0": set(),  # integer=True passes too (3.5 min with it: left out of CI)
}

# name -> (error class, a regex the offending ops of an UnsupportedOpError, or else the message, must
# match): the reason it does not emit today.
EXPECTED_BLOCKED: dict[str, tuple[str, str]] = {
}


def test_every_zoo_model_is_classified():
    assert not set(EMITS) & set(EXPECTED_BLOCKED), "a model is listed both as emitting and as blocked"
    assert set(EMITS) | set(EXPECTED_BLOCKED) == set(zoo.ZOO)
    assert len(zoo.ZOO) >= 40


def test_zoo_libraries_are_the_pinned_ones():
    """The zoo's verdicts hold for the timm/torchvision of constraints.txt (make venv installs those)."""
    from importlib.metadata import version
    from pathlib import Path

    pins = dict(line.split("==") for line in (Path(__file__).parents[1] / "constraints.txt").read_text().split()
                if "==" in line)  # fmt: skip
    tv = zoo.import_torchvision()
    assert version("timm") == pins["timm"] and version("torchvision") == pins["torchvision"]
    # the shim only declares schemas when torchvision's C++ ops are missing; the definitions work either way
    net = tv.models.mobilenet_v2(weights=None, width_mult=0.35, num_classes=3).eval()
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("name", sorted(EMITS))
def test_zoo_model_emits_and_matches_pytorch(name, tmp_path):
    from helpers import emit_and_verify

    model, x = zoo.build(name)
    res = emit_and_verify(model, x.shape, "dense", tmp_path, inputs=x, name=name, check=False)  # -Werror
    # PyTorch's own fp32-vs-fp64 noise allowed on ill-conditioned random nets (zoo.parity_bound)
    bound, noise = zoo.parity_bound(model, x, res.reference, res.tolerance)
    err = float(np.max(np.abs(res.outputs.astype(np.float64) - res.reference.astype(np.float64))))
    assert err <= bound, (
        f"{name}: C differs from PyTorch by {err:.3g} > {res.tolerance:.3g} + 2 x {noise:.3g} (PyTorch fp32 vs fp64)"
    )
    assert res.report["memory"]["arena_bytes"] >= res.report["memory"]["lower_bound_bytes"] > 0
    if "integer" in EMITS[name]:
        cal = torch.randn((16, *x.shape[1:]), generator=torch.Generator().manual_seed(7))
        d = tmp_path / f"{name}_int8"
        save_compressed_model(model, "dense", x[:1], d, integer=True, calibration_data=cal)
        proc = subprocess.run(["make", "-s", "-C", str(d), "check"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout + proc.stderr


# Every zoo model emits today (EXPECTED_BLOCKED is empty); a model added as blocked gets this check (defined
# only then, so that an empty parameter set does not show as a skipped test).
if EXPECTED_BLOCKED:

    @pytest.mark.parametrize("name", sorted(EXPECTED_BLOCKED))
    def test_blocked_model_still_fails_clearly(name, tmp_path):
        err_class, pattern = EXPECTED_BLOCKED[name]
        model, x = zoo.build(name)
        d = tmp_path / name
        try:
            save_compressed_model(model, "dense", input_data=x[:1], directory=d)
        except CodegenError as exc:
            msg = str(exc)
            # an UnsupportedOpError's message also lists the supported ops: match the offending ones only
            named = "\n".join(t for _, t, _ in exc.nodes) if isinstance(exc, UnsupportedOpError) else msg
            assert type(exc).__name__ == err_class and re.search(pattern, named), (
                f"{name} now fails for another reason: {type(exc).__name__}: {msg.splitlines()[0]}\n"
                f"Update its EXPECTED_BLOCKED entry in tests/test_zoo.py (was {err_class} matching {pattern!r})."
            )
            assert not d.exists(), "a failed emission left a directory behind"
            # one error, grouped by op: a few lines whatever the number of offending nodes (issue 14)
            head = msg.split("\nSupported operations")[0].splitlines()
            assert len(head) <= UnsupportedOpError.MAX_GROUPS + 4, msg
            return
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{name} raised a raw {type(exc).__name__} instead of a CodegenError: {exc}")
        pytest.fail(f"{name} now emits: move it from EXPECTED_BLOCKED to EMITS in tests/test_zoo.py "
                    "(where its parity with PyTorch is then checked)")  # fmt: skip


@pytest.mark.board
@pytest.mark.parametrize("name", sorted(n for n, opts in EMITS.items() if "board" in opts))
def test_zoo_model_on_board(name, tmp_path):
    from helpers import assert_parity
    from test_board import require_board

    from codegen import board as cboard

    require_board()
    model, x = zoo.build(name, n_inputs=1)
    with torch.no_grad():
        reference = model(x).numpy().reshape(-1)
    d = tmp_path / name
    save_compressed_model(model, "dense", input_data=x, directory=d)
    result = cboard.run(d, "m4")
    assert result.passed, f"{name} on m4: exit {result.exit_code}\n{result.stdout}{result.stderr}"
    assert_parity(result.outputs, reference, f"{name} on the emulated m4")
