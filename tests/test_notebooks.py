"""The notebooks: each runs top to bottom in smoke mode with a real Jupyter kernel, and follows the repo's rules.

Rules checked here: notebooks 01-03 are committed with their outputs (figures visible on GitHub), 04-07
without (no synthetic-data figure is ever shown as a result); every notebook opens in Colab, has a
papermill `parameters` cell with the `VITLAB_SMOKE` switch, ends with things to try, and imports
vitlab rather than redefining its modules.
"""

import ast
import base64
import re
import struct
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
COMMITTED_WITH_OUTPUTS = {"01_patch_embedding", "02_cls_token_and_position_embeddings", "03_encoder_block"}
CELL_TIMEOUT = 300  # seconds; a smoke-mode cell takes seconds, so this only catches hangs
SMOKE_LINE = 'SMOKE = os.environ.get("VITLAB_SMOKE") == "1"'


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def as_python(source: str) -> str:
    """Cell source with IPython magics (`%tensorboard`, `!ls`) turned into plain Python calls."""
    return TransformerManager().transform_cell(source)


def test_the_seven_notebooks_are_there_in_reading_order():
    found = sorted(path.stem for path in NOTEBOOK_DIR.glob("*.ipynb"))
    assert found == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=EXPECTED)
def test_notebook_runs_top_to_bottom_in_smoke_mode(path, monkeypatch, tmp_path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("VITLAB_SMOKE", "1")  # the kernel inherits the environment
    # Smoke-mode models are tiny: one thread per kernel beats two threads fighting over CI's two cores.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # smoke runs write data, runs and checkpoints to temporary folders
    nb = read(path)
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
        pytest.fail(f"{path.name} fails in smoke mode (VITLAB_SMOKE=1):\n{error}", pytrace=False)
    errors = [out for cell in code_cells(nb) for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"


def test_notebook_4_offline_without_cifar_ends_with_a_short_message_for_the_notebook(monkeypatch, tmp_path):
    """Not in smoke mode, with no CIFAR-10 and no network: one frame, no chained traceback, the variable to change."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.delenv("VITLAB_SMOKE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
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
def test_output_policy(path):
    cells = code_cells(read(path))
    if path.stem in COMMITTED_WITH_OUTPUTS:
        counts = [cell.execution_count for cell in cells]
        assert counts == list(range(1, len(cells) + 1)), f"{path.name} must be saved after one run top to bottom"
        outputs = [out for cell in cells for out in cell.outputs]
        assert not [out for out in outputs if out.output_type == "error"], f"{path.name} was saved with an error"
        images = [out for out in outputs if "image/png" in out.get("data", {})]
        assert images, f"{path.name} must be committed with its figures"
        assert path.stat().st_size < 1_500_000, f"{path.name} is {path.stat().st_size:,} bytes: lower the dpi"
    else:
        dirty = [i for i, cell in enumerate(cells) if cell.outputs or cell.execution_count is not None]
        assert not dirty, f"{path.name} must be committed without outputs (code cells {dirty} have some)"


@pytest.mark.parametrize(
    "path", [p for p in NOTEBOOKS if p.stem in COMMITTED_WITH_OUTPUTS], ids=sorted(COMMITTED_WITH_OUTPUTS)
)
def test_committed_figures_are_readable_sizes(path):
    """Figures of 600-900 pixels (about 100 dpi): a 14 x 14 grid of tiles stays legible on GitHub."""
    for index, cell in enumerate(code_cells(read(path))):
        for out in cell.outputs:
            if "image/png" in out.get("data", {}):
                png = base64.b64decode(out.data["image/png"])
                width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
                assert 550 <= width <= 1000, f"{path.name}, code cell {index}: a figure {width} pixels wide"
                assert 200 <= height <= 1000, f"{path.name}, code cell {index}: a figure {height} pixels high"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=EXPECTED)
def test_notebook_opens_in_colab_and_has_a_smoke_switch(path):
    nb = read(path)
    first, last = nb.cells[0], nb.cells[-1]
    badge = f"https://colab.research.google.com/github/vitlab/vitlab/blob/main/notebooks/{path.name}"
    assert first.cell_type == "markdown" and badge in first.source
    assert "GPU" in first.source and "CPU" in first.source, "the opening cell says how long it takes on each"
    install = code_cells(nb)[0].source
    assert '"google.colab" in sys.modules' in install and "git+https://github.com/vitlab/vitlab" in install
    parameters = [cell for cell in code_cells(nb) if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1, "exactly one cell tagged `parameters` (papermill)"
    assert SMOKE_LINE in parameters[0].source
    assert last.cell_type == "markdown" and last.source.startswith("## Things to try")
    assert any(re.search(r"^(import vitlab|from vitlab)", c.source, re.M) for c in code_cells(nb))


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
