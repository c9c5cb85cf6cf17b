"""compress_NN_models under torchrun with DistributedDataParallel: 2 CPU processes, gloo.

The test launches this file with torchrun; each rank writes what it ended with and the test
checks that both ranks hold identical masks, weights and exact bytes within the budget.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUDGET = 9000


def _worker(out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from codegen import weight_bytes
    from sparsecomp import compress_NN_models, find_compressible_layers, load_digits

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    train, val, test = load_digits(batch_size=64, seed=0)
    ds = train.dataset
    train_ddp = DataLoader(ds, batch_size=32, sampler=DistributedSampler(ds, seed=0))
    val_ddp = DataLoader(val.dataset, batch_size=128, sampler=DistributedSampler(val.dataset, shuffle=False))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(3):
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    report = compress_NN_models(model, f"{BUDGET}B", train_ddp, test, val_loader=val_ddp, num_epochs=2, representation="csr",
                                max_rounds=2, accuracy_tolerance=0.05, sensitivity_batches=2, progress=False,
                                factorization_min_params=4096)
    masks = hashlib.sha256()
    weights = hashlib.sha256()
    for name, mod in find_compressible_layers(model).items():
        masks.update(name.encode() + (mod.weight != 0).numpy().tobytes())
    for v in model.state_dict().values():
        weights.update(v.detach().cpu().numpy().tobytes())
    result = {
        "rank": rank,
        "final_bytes": report.final_bytes,
        "exact": weight_bytes(model, torch.zeros(1, 1, 8, 8)).total,
        "masks": masks.hexdigest(),
        "weights": weights.hexdigest(),
        "val_after": report.val_accuracy_after,
        "decompositions": [(d.layer, d.accepted) for d in report.decompositions],
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def test_two_ranks_end_identical(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).resolve()), str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["final_bytes"] == r1["final_bytes"] == r0["exact"] == r1["exact"]
    assert r0["final_bytes"] <= BUDGET
    assert r0["masks"] == r1["masks"]
    assert r0["weights"] == r1["weights"]
    assert r0["val_after"] == pytest.approx(r1["val_after"])
    assert r0["decompositions"] == r1["decompositions"]


if __name__ == "__main__":
    _worker(sys.argv[1])
