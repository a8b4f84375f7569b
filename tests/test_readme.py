"""The README's Python example runs as printed, scaled down: a tiny model, a stand-in checkpoint, the smoke run."""

import re
from pathlib import Path

import torch

from vitlab.data import write_synthetic_cifar
from vitlab.factory import create_model
from vitlab.weights.npz import save_npz

ROOT = Path(__file__).resolve().parents[1]

# The README's full-size calls and their seconds-on-a-CPU versions; each must appear in the README exactly once.
SCALED_DOWN = {
    '"ViT-B_16", num_classes=10, img_size=224': '"ViT-Test", num_classes=10, img_size=32',
    "torch.rand(4, 3, 224, 224)": "torch.rand(4, 3, 32, 32)",
    'get_experiment("scratch", num_steps=2000)': 'get_experiment("smoke", num_steps=4, warmup_steps=1, progress=False)',
}


def readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) == 1, "the README has one Python example"
    return blocks[0]


def test_readme_python_example_runs_as_printed(tmp_path, monkeypatch):
    code = readme_python()
    for full, small in SCALED_DOWN.items():
        assert code.count(full) == 1, f"the README's example no longer contains {full!r}"
        code = code.replace(full, small)
    monkeypatch.chdir(tmp_path)  # the example's relative folders (Pretrained/, data/, TB_log/, Model/) land here
    torch.manual_seed(0)
    save_npz(create_model("ViT-Test", num_classes=100), tmp_path / "Pretrained" / "imagenet21k_ViT-B_16.npz")
    write_synthetic_cifar(tmp_path / "data" / "synthetic", num_train=500, num_test=100)  # smaller than the default
    names: dict = {}
    exec(compile(code, "README.md", "exec"), names)
    assert names["tokens"].shape == (4, 1 + 16, 32)  # (B, 1 + N, D) of ViT-Test at 32 px
    assert len(names["maps"]) == 2 and names["maps"][0].shape == (4, 2, 17, 17)
    assert names["result"]["steps"] == 4
    assert len(names["test_set"]) == 100 and names["class_names"][0] == "airplane"
