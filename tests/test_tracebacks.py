"""A bug keeps its traceback; a mistake in the input stays one `error:` line (unless VITLAB_DEBUG=1 asks for more).

A command tells the two apart by the error's type: vitlab raises `vitlab.errors.VitlabError` about its input,
and anything else (a TypeError in a student's model, a bug in vitlab) is shown as Python shows it.
"""

import re
from pathlib import Path

import pytest
import torch

from vitlab import commands, errors
from vitlab.model import VisionTransformer

TRAIN = ["--config", "smoke", "--num_steps", "2", "--progress", "false", "--name", "r"]


class StudentViT(VisionTransformer):
    """A model with the slip a student makes: a tensor where torch.cat wants a list of them."""

    def forward_head(self, x, pre_logits=False):
        return torch.cat(x[:, 0], dim=1)  # TypeError: expected a tuple or list of tensors


def test_a_type_error_in_the_users_model_shows_its_traceback_and_the_bug_line(tmp_path, monkeypatch, capsys):
    import vitlab.training.setup as setup
    from vitlab.train import main

    monkeypatch.chdir(tmp_path)
    real_build_model = setup.build_model

    def build_student_model(cfg, num_classes):
        model, weights = real_build_model(cfg, num_classes)
        model.__class__ = StudentViT
        return model, weights

    monkeypatch.setattr(setup, "build_model", build_student_model)
    assert commands.run(main, TRAIN) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err
    assert f'File "{__file__}"' in err and "torch.cat(x[:, 0], dim=1)" in err  # the student's own file and line
    assert re.search(r"^TypeError: .*tuple", err, re.M), err
    assert not any(line.startswith("error: ") for line in err.splitlines())
    assert err.splitlines()[-1] == commands.BUG_LINE


def test_a_bug_in_any_command_keeps_its_traceback(capsys):
    def broken(argv):
        return {}["missing"]  # a KeyError: vitlab's messages never raise one

    assert commands.run(broken, []) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'missing'" in err
    assert err.splitlines()[-1] == commands.BUG_LINE


def test_a_bad_flag_value_is_one_line_and_vitlab_debug_adds_the_traceback(tmp_path, monkeypatch, capsys):
    from vitlab.train import main

    monkeypatch.chdir(tmp_path)
    assert commands.run(main, [*TRAIN, "--learning_rate", "fast"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line == "error: --learning_rate expects a number, got 'fast'"
    monkeypatch.setenv("VITLAB_DEBUG", "1")
    assert commands.run(main, [*TRAIN, "--learning_rate", "fast"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Traceback (most recent call last):" and err[-1] == line
    assert any(text.startswith("vitlab.errors.BadValue: --learning_rate expects a number") for text in err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "made, builtin",
    [
        (errors.BadValue("x"), ValueError),
        (errors.BadType("x"), TypeError),
        (errors.MissingFile("x"), FileNotFoundError),
        (errors.NotAFolder("x"), NotADirectoryError),
        (errors.IsAFolder("x"), IsADirectoryError),
        (errors.AlreadyExists("x"), FileExistsError),
        (errors.FileError(5, "Input/output error", "a.pt"), OSError),
        (errors.NoConnection("x"), ConnectionError),
        (errors.MissingPackage("x"), ImportError),
    ],
)
def test_vitlabs_errors_are_also_the_builtins_they_replace(made, builtin):
    assert isinstance(made, builtin) and isinstance(made, errors.VitlabError)


def test_the_errors_that_came_before_are_vitlabs_own():
    from vitlab.configs import ConfigError
    from vitlab.files import DiskFullError
    from vitlab.images import UnreadableImageError
    from vitlab.training.run_folder import RunFolderBusy
    from vitlab.training.stops import NonFiniteLossError
    from vitlab.weights.errors import CheckpointError

    for kind in (ConfigError, CheckpointError, UnreadableImageError, DiskFullError, NonFiniteLossError, RunFolderBusy):
        assert issubclass(kind, errors.VitlabError), kind
    assert issubclass(ConfigError, TypeError) and issubclass(ConfigError, ValueError)
    assert DiskFullError("full").errno == 28


def test_a_vitlab_error_from_a_dataloader_worker_arrives_as_itself_in_one_line():
    from torch._utils import ExceptionWrapper

    from vitlab.images import UnreadableImageError

    try:
        raise UnreadableImageError("image a/b.jpg cannot be read (empty file): remove it")
    except UnreadableImageError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(UnreadableImageError) as raised:  # how torch re-raises a worker's error
        wrapped.reraise()
    assert commands.describe(raised.value) == "image a/b.jpg cannot be read (empty file): remove it"


def test_the_bug_line_points_at_the_projects_issue_tracker():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    urls = dict(re.findall(r'^(Repository|Issues) = "([^"]+)"', pyproject, re.M))
    assert urls["Issues"] == commands.ISSUES == urls["Repository"] + "/issues"
    assert commands.ISSUES in commands.BUG_LINE


@pytest.mark.parametrize(
    "error", [MemoryError(), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text")]
)
def test_running_out_of_memory_is_one_line_that_says_what_to_change(capsys, error):
    def needs_more(argv):
        raise error

    assert commands.run(needs_more, []) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: out of memory (") and "use a smaller batch size" in line


def test_the_systems_refusal_to_write_a_file_is_vitlabs_error_naming_it(tmp_path, monkeypatch):
    import errno
    import os

    from vitlab.files import atomic_write

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "/elsewhere/tmpname")

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(errors.FileError) as refused:
        with atomic_write(tmp_path / "last.pt") as f:
            f.write(b"x")
    assert commands.describe(refused.value) == f"Read-only file system: {tmp_path / 'last.pt'}"
    assert list(tmp_path.iterdir()) == []
