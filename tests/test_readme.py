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


def readme_code() -> tuple[list[str], list[str]]:
    """(the README's fenced code blocks, its inline code spans)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```\w*\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```\w*\n.*?```", "", text, flags=re.S))
    return blocks, inline


def test_every_dotted_vitlab_name_in_the_readme_resolves_as_written():
    """`python -m vitlab.x` and `from vitlab.x import` name modules; anything else is an attribute of `import vitlab`,
    looked up in a fresh interpreter (as a reader's would be), e.g. `vitlab.predict.load_image`."""
    import json
    import subprocess
    import sys

    blocks, inline = readme_code()
    names = set()
    for code in [*blocks, *inline]:
        for kind, name in re.findall(r"(?:(-m|from|import)\s+)?\b(vitlab(?:\.\w+)+)", code):
            names.add(("module" if kind else "attribute", name))
    assert ("module", "vitlab.train") in names and ("attribute", "vitlab.create_model") in names  # found them
    script = """
import importlib, importlib.util, json, sys
wrong = []
for kind, name in json.loads(sys.argv[1]):
    if kind == "module":
        if importlib.util.find_spec(name) is None:
            wrong.append(name)
        continue
    value = importlib.import_module("vitlab")
    try:
        for part in name.split(".")[1:]:
            value = getattr(value, part)
    except AttributeError as error:
        wrong.append(f"{name}: {error}")
print(json.dumps(wrong))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(sorted(names))], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert json.loads(done.stdout) == []


def readme_train_commands() -> list[str]:
    """The arguments of every `-m vitlab.train` command in the README's code blocks, continuation lines joined."""
    blocks, _ = readme_code()
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0]  # comments beside a command
            if re.search(r"-m vitlab\.train\b", line):
                commands.append(line.split("vitlab.train", 1)[1].strip())
    return commands


def test_every_readme_training_command_warms_up_for_less_than_the_run(tmp_path, monkeypatch, capsys):
    """Each README `vitlab.train` line, with --print_config: a schedule that decays, not one that only warms up."""
    import shlex

    import yaml

    from vitlab.train import main

    monkeypatch.chdir(tmp_path)  # a line's `> imagenet.yaml` is written here, for the line after it
    commands = readme_train_commands()
    assert len(commands) >= 10, commands
    for command in commands:
        command, _, target = command.partition(">")
        argv = shlex.split(command)
        main(argv if "--print_config" in argv else [*argv, "--print_config"])
        out = capsys.readouterr().out
        if target:
            (tmp_path / target.strip()).write_text(out)
        cfg = yaml.safe_load(out)
        assert cfg["warmup_steps"] < cfg["num_steps"], (command, cfg["warmup_steps"], cfg["num_steps"])
