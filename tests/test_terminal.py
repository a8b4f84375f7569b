"""What a person reads in the terminal: --help texts, listings, and the lines a training run prints."""

import re

import pytest

from vitlab.configs import AUGMENTATIONS, DATASET_NAMES, DECAY_TYPES, OPTIMIZERS, PRECISIONS
from vitlab.training.cli import build_parser, config_from_args


def test_train_help_shows_each_fields_comment_default_and_choices(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    for choices in (DATASET_NAMES, OPTIMIZERS, DECAY_TYPES, PRECISIONS, AUGMENTATIONS):
        assert "choices: " + ", ".join(choices) in text
    assert "--num_steps N optimiser steps in total (steps, not epochs" in text
    assert "[default: 10000]" in text
    assert "--learning_rate X peak learning rate, reached at the end of warmup [default: 0.03]" in text
    assert "Google's 2%) [default: 0.02]" in text
    assert "--progress true|false show a tqdm progress bar [default: true]" in text
    assert "R50-ViT-B_16, ViT-CIFAR-3M" in text  # models listed whole, not split at a hyphen
    assert "VITConfig.dataset" not in text


def test_a_prefix_of_a_flag_is_not_taken_for_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        config_from_args(["--num_step", "3"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --num_step 3" in capsys.readouterr().err
    assert config_from_args(["--num_steps", "3"]).num_steps == 3


def test_factory_help_says_what_it_prints(capsys):
    from vitlab.factory import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "every model preset" in capsys.readouterr().out
    assert main([]) == 0
    assert "ViT-B_16" in capsys.readouterr().out


def test_download_list_columns_align(capsys):
    from vitlab.download import main

    assert main(["--list"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    file_columns = {re.search(r"\S+\s+(\S)", row).start(1) for row in rows}
    url_columns = {row.index("https://") for row in rows if "https://" in row}
    assert len(file_columns) == 1 and len(url_columns) == 1, rows


# --- a training run -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def printed_run(tmp_path_factory, synthetic_cifar):
    """A 6-step run on synthetic CIFAR files, evaluated at steps 3 and 6, with what it printed."""
    import contextlib
    import io

    from vitlab.configs import get_experiment
    from vitlab.train import train

    work = tmp_path_factory.mktemp("printed")
    cfg = get_experiment(
        "smoke", dataset="cifar10", data_dir=str(synthetic_cifar), num_steps=6, eval_every=3, log_every=50,
        warmup_steps=1, log_dir=str(work / "TB_log"), save_dir=str(work / "Model"), progress=True,
    )  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = train(cfg)
    return cfg, result, out.getvalue(), err.getvalue()


def test_a_run_says_where_it_writes_then_one_line_per_evaluation(printed_run):
    cfg, result, out, err = printed_run
    lines = out.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("run ")) :]  # after any notes
    assert lines[0].startswith(f"run {cfg.run_name}: ViT-Test (")
    assert "parameters) from random weights on synthetic data, 6 steps of 32 images, cpu, fp32" in lines[0]
    assert lines[1] == f"  TensorBoard: {result['run_dir']}  (tensorboard --logdir {cfg.log_dir})"
    assert lines[2].startswith(f"  checkpoints: {result['checkpoint_dir']}/best.pt, last.pt")
    evaluations = [line for line in lines if line.startswith("step ")]
    number, percent = r"\d\.\d{4}", r"\d+\.\d\d%"
    pattern = rf": val loss {number}, val accuracy {percent} \(best ({percent}) at step (\d)\), train loss {number}"
    first, last = (re.fullmatch(f"step {step}/6" + pattern, line) for line, step in zip(evaluations, (3, 6)))
    assert first and last and len(evaluations) == 2, evaluations
    assert last.group(1) == f"{100 * result['best_val_accuracy']:.2f}%" and int(last.group(2)) == result["best_step"]
    assert err == "", "no progress bar when the output is not a terminal"


def test_the_end_of_a_run_says_the_accuracy_is_on_synthetic_data(printed_run):
    from vitlab.train import summary_lines

    cfg, result, _, _ = printed_run
    lines = summary_lines(cfg, result)
    best = f"{100 * result['best_val_accuracy']:.2f}% (step {result['best_step']})"
    assert lines[0] == f"best validation accuracy: {best}"
    assert lines[2].startswith("these accuracies are on synthetic data")
    assert any(line.startswith("TensorBoard run:") for line in lines)
    assert not any(line.startswith("TensorBoard") for line in summary_lines(cfg.replace(TB_log=False), result))
    real = {**result, "synthetic_data": False}
    assert not any("synthetic" in line for line in summary_lines(cfg, real))


def test_tensorboard_hparams_are_the_distinguishing_fields_with_their_types(printed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, result, _, _ = printed_run
    events = EventAccumulator(result["run_dir"], size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {name: value.WhichOneof("kind") for name, value in start.hparams.items()}
    assert values == {
        "model_type": "string_value", "dataset": "string_value", "img_size": "number_value",
        "train_batch_size": "number_value", "optimizer": "string_value", "learning_rate": "number_value",
        "weight_decay": "number_value", "warmup_steps": "number_value", "num_steps": "number_value",
        "augment": "string_value", "label_smoothing": "number_value", "precision": "string_value",
        "pretrained": "bool_value",
    }  # fmt: skip
    assert start.hparams["model_type"].string_value == "ViT-Test" and start.hparams["pretrained"].bool_value is False
    assert start.hparams["learning_rate"].number_value == pytest.approx(1e-3)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = [info.name.tag for info in experiment.metric_infos]
    assert metrics == ["val/best_accuracy", "test/top1", "test/top5"]
    shown_first = {info.name for info in experiment.hparam_infos if info.differs}  # TensorBoard's first 5 columns
    assert shown_first == {"model_type", "dataset", "pretrained", "learning_rate", "num_steps"}
    scalars = set(events.Tags()["scalars"])
    assert set(metrics) <= scalars and not [tag for tag in scalars if tag.startswith("hparam")]
    assert events.Scalars("test/top1")[-1].value == pytest.approx(result["test_accuracy"])
