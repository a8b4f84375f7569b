"""What a person reads in the terminal: --help texts, listings, and the lines a training run prints."""

import re

import pytest

from vitlab.configs import AUGMENTATIONS, DATASET_NAMES, DECAY_TYPES, OPTIMIZERS, PRECISIONS
from vitlab.training.flags import build_parser, config_from_args


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
    assert "--progress true|false show a tqdm progress bar" in text
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
    assert lines[1] == f"  TensorBoard: {result['tb_dir']}  (tensorboard --logdir {cfg.log_dir})"
    assert lines[2].startswith(f"  checkpoints: {result['checkpoint_dir']}/best.pt, last.pt")
    evaluations = [line for line in lines if line.startswith("step ")]
    number, percent = r"\d\.\d{4}", r"\d+\.\d\d%"
    pattern = rf": val loss {number}, val accuracy {percent} \(best ({percent}) at step (\d)\), train loss {number}"
    first, last = (re.fullmatch(f"step {step}/6" + pattern, line) for line, step in zip(evaluations, (3, 6)))
    assert first and last and len(evaluations) == 2, evaluations
    assert last.group(1) == f"{100 * result['best_val_accuracy']:.2f}%" and int(last.group(2)) == result["best_step"]
    assert err == "", "no progress bar when the output is not a terminal"


def test_train_from_python_ends_with_the_lines_the_command_line_ends_with(printed_run):
    from vitlab.train import summary_lines

    cfg, result, out, _ = printed_run
    assert out.splitlines()[-len(summary_lines(cfg, result)) :] == summary_lines(cfg, result)


def test_without_a_progress_bar_a_line_comes_at_least_every_minute(tmp_path, synthetic_cifar, monkeypatch, capsys):
    import vitlab.train
    from vitlab.configs import get_experiment

    monkeypatch.setattr(vitlab.train, "PLAIN_PROGRESS_SECONDS", -1)  # every step is a minute later
    cfg = get_experiment(
        "smoke", dataset="cifar10", data_dir=str(synthetic_cifar), num_steps=3, eval_every=3, log_every=50,
        warmup_steps=1, log_dir=str(tmp_path / "TB_log"), save_dir=str(tmp_path / "Model"), progress=False,
    )  # fmt: skip
    vitlab.train.train(cfg)
    steps = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in steps] == ["step 1/3", "step 2/3", "step 3/3"]
    assert re.fullmatch(r"step 1/3: train loss \d\.\d{4}, lr \S+, \d+ images/s", steps[0])


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
    events = EventAccumulator(result["tb_dir"], size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {name: value.WhichOneof("kind") for name, value in start.hparams.items()}
    assert values == {
        "model_type": "string_value", "dataset": "string_value", "img_size": "number_value",
        "train_batch_size": "number_value", "optimizer": "string_value", "learning_rate": "number_value",
        "weight_decay": "number_value", "warmup_steps": "number_value", "num_steps": "number_value",
        "augment": "string_value", "label_smoothing": "number_value", "precision": "string_value",
        "pretrained": "bool_value", "init": "string_value", "train_fraction": "number_value",
        "train_images": "number_value", "val_images": "number_value",
    }  # fmt: skip
    assert start.hparams["init"].string_value == "random" and start.hparams["train_images"].number_value > 0
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


def test_evaluate_and_predict_help_explain_batch_size_and_device(capsys):
    from vitlab.evaluate import main as evaluate_main
    from vitlab.predict import main as predict_main

    for main in (evaluate_main, predict_main):
        with pytest.raises(SystemExit):
            main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch_size BATCH_SIZE images per forward pass; lower it when memory runs out" in text
    assert text.count("--device DEVICE where to compute: cpu, cuda or cuda:N") == 2  # evaluate's and predict's


def test_name_help_says_what_the_automatic_name_is_made_of_in_words(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    name_help = text.split("--name TEXT ", 1)[1].split(" --dataset", 1)[0]
    assert name_help == (
        "the run's folder in save_dir and log_dir; None: experiment, model, data, time "
        "[default: e.g. scratch_ViT-CIFAR-3M_cifar10_20261121_080312]"
    )
    assert "<" not in name_help and "test_cycles" not in name_help


# --- a recipe's warm-up and a shorter run ---------------------------------------------------------
@pytest.mark.parametrize(
    "argv, warmup, scaled",
    [
        (["--config", "finetune", "--num_steps", "500"], 25, "the finetune experiment's 500 of 10,000"),
        (["--config", "scratch", "--num_steps", "2000"], 100, "the scratch experiment's 1,000 of 20,000"),
        (["--num_steps", "100"], 5, "VITConfig's 500 of 10,000"),
        (["--config", "smoke", "--num_steps", "2"], 0, "the smoke experiment's 5 of 20"),
        (["--config", "finetune", "--num_steps", "500", "--warmup_steps", "40"], 40, None),  # asked for: kept
        (["--config", "finetune"], 500, None),  # the recipe's own length
        (["--name", "a-run", "--resume", "--num_steps", "500"], 500, None),  # a resumed run keeps its warm-up
    ],
)
def test_a_shorter_run_scales_the_recipes_warm_up_and_says_so(argv, warmup, scaled):
    from vitlab.training.flags import parse_command_line

    cfg, _, notes = parse_command_line(argv)
    assert cfg.warmup_steps == warmup
    if scaled is None:
        assert notes == []
    else:
        assert notes == [
            f"warm-up of {warmup} step{'s' * (warmup != 1)}, {scaled} scaled to these {cfg.num_steps:,} steps "
            "(--warmup_steps sets it)"
        ]
        assert "warmup_steps" not in cfg.fields_set  # derived, not the user's: a resume never compares it


def test_print_config_keeps_its_notes_off_the_config_it_prints(capsys):
    import yaml

    from vitlab.train import main

    main(["--config", "finetune", "--num_steps", "500", "--print_config"])
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["warmup_steps"] == 25
    assert err.startswith("note: warm-up of 25 steps, the finetune experiment's 500 of 10,000 scaled")


def test_a_short_run_does_not_promise_validation_every_eval_every_steps(tmp_path, synthetic_cifar, capsys):
    from vitlab.configs import get_experiment
    from vitlab.train import train

    cfg = get_experiment(
        "smoke", dataset="cifar10", data_dir=str(synthetic_cifar), num_steps=2, eval_every=500, warmup_steps=1,
        log_dir=str(tmp_path / "TB"), save_dir=str(tmp_path / "Model"), name="short", progress=False,
    )  # fmt: skip
    train(cfg)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("run short: ") and lines[2].endswith("; validation at the end (step 2)")
    train(cfg.replace(num_steps=7, eval_every=3, resume="last"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("7 steps of 32 images, resuming after step 2, cpu, fp32")
    assert lines[2].endswith("; validation every 3 steps and at step 7")
    assert lines[3] == "  note: resuming with changed settings: eval_every 500 -> 3, num_steps 2 -> 7"


def test_an_evaluation_step_prints_one_line(tmp_path, synthetic_cifar, monkeypatch, capsys):
    """Without a progress bar, a plain line about training comes at most every PLAIN_PROGRESS_SECONDS; not also
    at a step whose evaluation line is printed anyway."""
    import importlib

    from vitlab.configs import get_experiment

    train_module = importlib.import_module("vitlab.train")  # the module (vitlab.train is also the function)

    monkeypatch.setattr(train_module, "PLAIN_PROGRESS_SECONDS", 0)  # a plain line at every logging step
    cfg = get_experiment(
        "smoke", dataset="cifar10", data_dir=str(synthetic_cifar), num_steps=4, eval_every=2, log_every=1,
        warmup_steps=1, log_dir=str(tmp_path / "TB"), save_dir=str(tmp_path / "Model"), name="lines", progress=True,
    )  # fmt: skip
    train_module.train(cfg)
    steps = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert steps == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]


# --- what a stop and a warning look like ----------------------------------------------------------
def test_a_requested_stop_is_not_an_error_and_warnings_are_one_line(capsys):
    import warnings

    from vitlab import commands
    from vitlab.training.stops import TrainingInterrupted

    def stopped(argv):
        raise TrainingInterrupted("SIGINT at step 3 of 10: saved Model/x/last.pt (step 3); continue with: ...")

    assert commands.run(stopped) == 130
    assert (
        capsys.readouterr().err
        == "stopped: SIGINT at step 3 of 10: saved Model/x/last.pt (step 3); continue with: ...\n"
    )

    def warns(argv):
        warnings.warn("warmup_steps 5 >= num_steps 3: the learning rate\\n only rises", UserWarning, stacklevel=1)
        return 0

    assert commands.run(warns) == 0
    assert capsys.readouterr().err == "warning: warmup_steps 5 >= num_steps 3: the learning rate\\n only rises\n"


# --- TensorBoard ----------------------------------------------------------------------------------
def hparams_of(run_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}


def test_hparams_are_those_of_the_resumed_run(tmp_path, synthetic_cifar):
    from vitlab.configs import get_experiment
    from vitlab.train import train

    cfg = get_experiment(
        "smoke", dataset="cifar10", data_dir=str(synthetic_cifar), num_steps=2, eval_every=2, warmup_steps=1,
        log_dir=str(tmp_path / "TB"), save_dir=str(tmp_path / "Model"), name="resumed", progress=False,
    )  # fmt: skip
    train(cfg)
    assert hparams_of(tmp_path / "TB" / "resumed")["num_steps"] == 2
    train(cfg.replace(num_steps=5, resume="last"))
    assert hparams_of(tmp_path / "TB" / "resumed")["num_steps"] == 5  # the run and its config.json say 5
    assert len(list((tmp_path / "TB" / "resumed").glob("events.out.tfevents.*"))) == 3  # hparams + 2 segments


def test_the_sample_grid_draws_across_classes(tmp_path):
    """An ImageFolder lists its first class first; the grid takes one image of each class in turn, at random."""
    from PIL import Image

    from vitlab.configs import VITConfig
    from vitlab.data import build_datasets
    from vitlab.training.logs import sample_indices

    for name in ("ant", "bee", "cat"):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / name / f"{i}.png")
    cfg = VITConfig(dataset="folder", data_dir=str(tmp_path), model_type="ViT-Test", img_size=32, val_split=0.1)
    train_set = build_datasets(cfg)[0]
    chosen = sample_indices(train_set, 16, seed=0)
    labels = [train_set.base.targets[train_set.indices[i]] for i in chosen]
    assert labels == [0, 1, 2] * 5 + [0] and len(set(chosen)) == 16
    assert chosen != sorted(chosen)  # drawn at random within each class, not the first images
    assert sample_indices(train_set, 16, seed=0) == chosen  # seeded


def test_every_run_carries_the_custom_scalars_layout_of_the_comparison(printed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    _, result, _, _ = printed_run
    events = EventAccumulator(result["tb_dir"], size_guidance={"tensors": 0})
    events.Reload()
    stored = events.Tensors(metadata.CONFIG_SUMMARY_TAG)[0].tensor_proto.string_val[0]
    layout = layout_pb2.Layout.FromString(stored)
    charts = {chart.title: list(chart.multiline.tag) for chart in layout.category[0].chart}
    assert layout.category[0].title == "every run side by side"
    assert charts["val/accuracy"] == [r"^val/accuracy$"] and "train/lr" in charts
