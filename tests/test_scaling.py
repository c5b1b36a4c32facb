"""launch/scaling.py: every layout gives the same loss; the table's bytes per device fall 1/n."""

import csv
import subprocess
import sys

from _train_utils import REPO


def test_scaling_script_on_fake_devices(tmp_path):
    out = tmp_path / "scaling.csv"
    cmd = [sys.executable, str(REPO / "launch" / "scaling.py"), "--devices=1,2", f"--out={out}"]
    cmd += ["--rows=64", "--dim=8", "--rank=2", "--batch=8", "--steps=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not speed" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    assert [(r["devices"], r["mesh"]) for r in rows] == [
        ("1", "data=1xmodel=1"),
        ("2", "data=2xmodel=1"),
        ("2", "data=1xmodel=2"),
    ]
    losses = {float(r["final_loss"]) for r in rows}
    assert max(losses) - min(losses) < 1e-5
    table = [int(r["table_bytes_per_device"]) for r in rows]
    assert table == [64 * 8 * 4, 64 * 8 * 4, 64 * 8 * 4 // 2]
