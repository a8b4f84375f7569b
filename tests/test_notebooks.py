"""The notebooks: each runs top to bottom in smoke mode with a real Jupyter kernel, and follows the repo's rules.

Rules checked here: every notebook is committed with the outputs of a real run (`notebooks/execute.py`), never a
smoke one, and its first cell says what produced them; 04-07 show at least two figures each. Every notebook
opens in Colab from the repository URL of pyproject.toml and installs only what Colab lacks, has a papermill
`parameters` cell with the `VITLAB_SMOKE` switch, ends with things to try and exercises, and imports vitlab rather than
redefining its modules. Smoke runs say that their data are synthetic and leave no folder behind.
"""

import ast
import base64
import re
import struct
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = [
    "01_patch_embedding",
    "02_cls_token_and_position_embeddings",
    "03_encoder_block",
    "04_train_from_scratch",
    "05_finetune_pretrained",
    "06_compare_runs",
    "07_what_the_model_looks_at",
]
NOTEBOOKS = [NOTEBOOK_DIR / f"{name}.ipynb" for name in EXPECTED]
EXPERIMENTS = EXPECTED[3:]  # 04-07: trained models, so at least two figures each; they write or read runs
RECIPES = ["04_train_from_scratch", "05_finetune_pretrained"]  # a "paper" (GPU) and a "cpu" recipe each
CELL_TIMEOUT = 300  # seconds; a smoke-mode cell takes seconds, so this only catches hangs
SMOKE_LINE = 'SMOKE = os.environ.get("VITLAB_SMOKE") == "1"'
PROVENANCE = "**The outputs below** were produced by `python notebooks/execute.py`"  # written by execute.py
PYPROJECT = (NOTEBOOK_DIR.parent / "pyproject.toml").read_text()
REPOSITORY = re.search(r'^Repository = "(https://github\.com/[^"]+)"$', PYPROJECT, re.M).group(1)


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def printed(nb) -> str:
    return "".join(out.get("text", "") for cell in code_cells(nb) for out in cell.outputs)


def figures(nb) -> list:
    return [out for cell in code_cells(nb) for out in cell.outputs if "image/png" in out.get("data", {})]


def as_python(source: str) -> str:
    """Cell source with IPython magics (`%tensorboard`, `!ls`) turned into plain Python calls."""
    return TransformerManager().transform_cell(source)


def execute(nb) -> None:
    """Run `nb` in place with a kernel started in notebooks/, as Jupyter does; a failing cell fails the test."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        record_timing=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # the working directory, as in Jupyter
    )
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(str(error), pytrace=False)
    errors = [out for cell in code_cells(nb) for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{errors[0].ename}: {errors[0].evalue}"


def test_the_seven_notebooks_are_there_in_reading_order():
    found = sorted(path.stem for path in NOTEBOOK_DIR.glob("*.ipynb"))
    assert found == EXPECTED


SMOKE_RUNS = [(path, "auto") for path in NOTEBOOKS] + [(NOTEBOOK_DIR / f"{name}.ipynb", "paper") for name in RECIPES]


@pytest.mark.parametrize(("path", "recipe"), SMOKE_RUNS, ids=EXPECTED + [f"{name}-paper" for name in RECIPES])
def test_notebook_runs_top_to_bottom_in_smoke_mode(path, recipe, monkeypatch, tmp_path):
    """On a CPU, "auto" takes the CPU recipe; VITLAB_RECIPE=paper runs the GPU recipe's code, scaled down."""
    monkeypatch.setenv("VITLAB_SMOKE", "1")  # the kernel inherits the environment
    monkeypatch.setenv("VITLAB_RECIPE", recipe)
    # Smoke-mode models are tiny: one thread per kernel beats two threads fighting over CI's two cores.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # smoke runs write data, runs and checkpoints to temporary folders
    nb = read(path)
    execute(nb)
    text = printed(nb)
    assert "| smoke" in text, f"{path.name} prints that it runs in smoke mode"
    assert not list(tmp_path.glob("vitlab_smoke_*")), f"{path.name} leaves its smoke folder behind"
    for run in re.findall(r"^run (\S+):", text, re.M):
        assert "synthetic" in run, f"{path.name}: the smoke run {run} does not say that its data are synthetic"


def test_compare_runs_without_runs_says_how_to_get_them_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("VITLAB_SMOKE", raising=False)
    monkeypatch.setenv("VITLAB_TENSORBOARD", "0")
    nb = read(NOTEBOOK_DIR / "06_compare_runs.ipynb")
    for cell in code_cells(nb):
        cell.outputs, cell.execution_count = [], None
    index = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
    folders = f'RESULTS, LOG_DIR = "{tmp_path / "results.json"}", "{tmp_path / "TB_log"}"  # no results, no runs'
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(folders))  # as papermill injects parameters
    execute(nb)
    lines = [line for line in printed(nb).splitlines() if "No runs to compare" in line]
    assert len(lines) == 1 and "python -m vitlab.sweep" in lines[0] and "notebook 4" in lines[0]
    assert not figures(nb)


def test_notebook_4_offline_without_cifar_ends_with_a_short_message_for_the_notebook(monkeypatch, tmp_path):
    """Not in smoke mode, with no CIFAR-10 and no network: one frame, no chained traceback, the variable to change."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.delenv("VITLAB_SMOKE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("VITLAB_PHOTOS", str(tmp_path / "photos"))  # none: made from CIFAR-10, which is absent
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):  # no network: nothing listens there
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    nb = read(NOTEBOOK_DIR / "04_train_from_scratch.ipynb")
    parameters = next(cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", []))
    for name in ("DATA_DIR", "LOG_DIR", "SAVE_DIR"):  # empty folders of this test, not the repository's
        parameters.source = re.sub(rf'^{name} = ".*?"', f'{name} = "{tmp_path / name}"', parameters.source, flags=re.M)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    with pytest.raises(CellExecutionError):
        client.execute()
    error = next(out for cell in code_cells(nb) for out in cell.get("outputs", []) if out.output_type == "error")
    traceback = "\n".join(error.traceback)
    assert error.ename == "FileNotFoundError" and "cifar10 is not in" in error.evalue
    assert error.evalue.endswith("In this notebook: set SMOKE = True in the parameters cell"), error.evalue
    assert "--" not in error.evalue  # no command-line flag inside a notebook
    assert "During handling of the above exception" not in traceback and "direct cause" not in traceback
    assert traceback.count("File ") + traceback.count("Cell In[") <= 2, traceback


@pytest.mark.parametrize("path", NOTEBOOKS, ids=EXPECTED)
def test_committed_with_the_outputs_of_a_real_run(path):
    nb = read(path)
    cells = code_cells(nb)
    counts = [cell.execution_count for cell in cells if cell.execution_count is not None]
    assert len(counts) >= 0.8 * len(cells), f"{path.name}: only {len(counts)} of {len(cells)} code cells were run"
    assert counts == sorted(set(counts)), f"{path.name} must be saved after one run top to bottom"
    outputs = [out for cell in cells for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"], f"{path.name} was saved with an error"
    text = printed(nb)
    assert "| smoke" not in text and "vitlab_smoke_" not in text, f"{path.name} was saved from a smoke run"
    assert not [run for run in re.findall(r"^run (\S+):", text, re.M) if "synthetic" in run], path.name
    assert PROVENANCE in nb.cells[0].source, f"{path.name}: its first cell does not say what produced its outputs"
    assert len(figures(nb)) >= (2 if path.stem in EXPERIMENTS else 1), f"{path.name} must be saved with its figures"
    assert path.stat().st_size < 2_000_000, f"{path.name} is {path.stat().st_size:,} bytes: lower the dpi"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=EXPECTED)
def test_committed_figures_are_readable_sizes(path):
    """Figures of 600-900 pixels (about 100 dpi): a 14 x 14 grid of tiles stays legible on GitHub."""
    for index, cell in enumerate(code_cells(read(path))):
        for out in cell.outputs:
            if "image/png" in out.get("data", {}):
                png = base64.b64decode(out.data["image/png"])
                width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
                assert 600 <= width <= 1000, f"{path.name}, code cell {index}: a figure {width} pixels wide"
                assert 200 <= height <= 1000, f"{path.name}, code cell {index}: a figure {height} pixels high"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=EXPECTED)
def test_notebook_opens_in_colab_and_has_a_smoke_switch(path):
    nb = read(path)
    first = nb.cells[0]
    badge = f"https://colab.research.google.com/github/{REPOSITORY.removeprefix('https://github.com/')}/blob/main"
    assert first.cell_type == "markdown" and f"{badge}/notebooks/{path.name}" in first.source
    assert "GPU" in first.source and "CPU" in first.source, "the opening cell says how long it takes on each"
    parameters = [cell for cell in code_cells(nb) if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1, "exactly one cell tagged `parameters` (papermill)"
    assert SMOKE_LINE in parameters[0].source
    assert any(re.search(r"^(import vitlab|from vitlab)", c.source, re.M) for c in code_cells(nb))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=EXPECTED)
def test_notebook_ends_with_things_to_try_then_exercises_with_folded_answers(path):
    """Two or three exercises close every notebook, each answer folded; a numeric answer is asserted by a code cell
    after it (or, in 04 and 05, whose outputs come from half-hour runs, in tests/test_exercises.py)."""
    cells = read(path).cells
    headings = [(i, c.source.splitlines()[0]) for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source]
    sections = [(i, line) for i, line in headings if line.startswith("## ")]
    assert [line for _, line in sections[-2:]] == ["## Things to try", "## Exercises"], sections[-2:]
    exercises = cells[sections[-1][0] :]
    text = "\n".join(c.source for c in exercises if c.cell_type == "markdown")
    questions = re.findall(r"^\*\*\d\.\*\* ", text, re.M)  # **1.** at the start of a line
    answers = text.count("<details><summary>Answer</summary>")
    assert 2 <= len(questions) <= 3 and answers == len(questions), f"{path.name}: {len(questions)} exercises"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=EXPECTED)
def test_colab_asks_for_a_gpu_only_where_it_pays(path):
    """04 and 05 run their GPU recipe on a GPU runtime; the others run as well on Colab's CPU runtime."""
    metadata = read(path).metadata
    if path.stem in RECIPES:
        assert metadata.get("accelerator") == "GPU"
    else:
        assert "accelerator" not in metadata and "gpuType" not in metadata, path.name
        assert "gpuType" not in metadata.get("colab", {}), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=EXPECTED)
def test_colab_cell_installs_from_the_one_repository_url_only_what_colab_lacks(path):
    install = code_cells(read(path))[0].source
    assert '"google.colab" in sys.modules' in install
    assert f'REPOSITORY = "{REPOSITORY}"' in install and '"--no-deps", f"git+{REPOSITORY}"' in install
    listed = ast.literal_eval(re.search(r"^    requirements = (\[.*?\])$", install, re.M | re.S).group(1))
    dependencies = re.search(r"^dependencies = \[(.*?)^\]", PYPROJECT, re.M | re.S).group(1)
    assert listed == re.findall(r'^    "([A-Za-z0-9_-]+)', dependencies, re.M), "pyproject.toml's dependencies"
    assert "find_spec" in install, "only the packages that cannot be imported are installed"
    if path.stem in EXPERIMENTS:
        assert "KEEP_RUNS_ON_DRIVE = False" in install
        assert "warning: Model/ and TB_log/ are on this Colab machine" in install


@pytest.mark.parametrize("keep", [True, False], ids=["on-drive", "not-kept"])
def test_colab_cell_keeps_runs_on_drive_when_asked(keep, tmp_path, monkeypatch, capsys):
    """The install cell as Colab runs it, with pip and Google Drive stood in for."""
    install = code_cells(read(NOTEBOOKS[3]))[0].source
    install = install.replace("KEEP_RUNS_ON_DRIVE = False", f"KEEP_RUNS_ON_DRIVE = {keep}")
    drive = tmp_path / "drive"
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=lambda where: (Path(where) / "MyDrive").mkdir(parents=True))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda command, check: commands.append(command))
    monkeypatch.chdir(tmp_path)  # Colab's /content
    exec(compile(install.replace("/content/drive", str(drive)), "the install cell", "exec"), {})
    assert len(commands) == 1 and "--no-deps" in commands[0] and f"git+{REPOSITORY}" in commands[0]
    assert "torch" not in commands[0], "what can be imported is not installed again"
    for folder in ("Model", "TB_log"):
        linked = (tmp_path / folder).is_symlink()
        kept = linked and (tmp_path / folder).resolve() == (drive / "MyDrive" / "vitlab" / folder).resolve()
        assert kept == keep
    printed_lines = capsys.readouterr().out
    assert ("warning: Model/ and TB_log/" in printed_lines) != keep
    assert f"installed vitlab from {REPOSITORY} and " not in printed_lines  # Colab had all the packages here
    assert f"installed vitlab from {REPOSITORY}, nothing else" in printed_lines, "one line says what was installed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=EXPECTED)
def test_notebook_code_is_python_and_defines_no_modules(path):
    for index, cell in enumerate(code_cells(read(path))):
        tree = ast.parse(as_python(cell.source), filename=f"{path.name}, code cell {index}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base) for base in node.bases]
                assert not any(base.endswith("Module") for base in bases), (
                    f"{path.name}, code cell {index} defines class {node.name}({', '.join(bases)}): "
                    "notebooks import vitlab's modules instead of redefining them"
                )


def test_the_command_that_regenerates_the_outputs_is_documented():
    assert "python notebooks/execute.py" in (NOTEBOOK_DIR.parent / "DEVELOPERS.md").read_text()
