"""Figure 7 analyses, attention rollout, TensorBoard read-back and confusion matrices: checked against hand values."""

import itertools
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

import vitlab
from vitlab.visualize import (
    attention_rollout,
    confusion_matrix,
    describe_confusion,
    embedding_filters_pca,
    mean_attention_distance,
    plot_attention_distance,
    plot_confusion_matrix,
    plot_embedding_filters,
    plot_position_embedding_similarity,
    plot_rollout,
    plot_runs,
    position_embedding_similarity,
    read_scalars,
    rollout_to_grid,
    show_misclassified,
    show_patches,
    to_display,
    uniform_attention_distance,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def random_attention(batch, heads, tokens, generator=None):
    return torch.randn(batch, heads, tokens, tokens, generator=generator).softmax(dim=-1)


# --- attention rollout ----------------------------------------------------------------------------
def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(17).expand(2, 3, 17, 17)
    rollout = attention_rollout([eye, eye, eye])
    torch.testing.assert_close(rollout, torch.eye(17).expand(2, 17, 17))


def test_rollout_matches_a_numpy_reference_and_rows_sum_to_one():
    maps = [random_attention(2, 4, 10) for _ in range(3)]
    rollout = attention_rollout(maps)
    expected = np.broadcast_to(np.eye(10), (2, 10, 10))
    for attention in maps:
        a = attention.double().numpy().mean(axis=1) + np.eye(10)
        a = a / a.sum(axis=-1, keepdims=True)
        expected = np.einsum("bij,bjk->bik", a, expected)  # later layers multiply on the left
    np.testing.assert_allclose(rollout.numpy(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 10))


def test_rollout_head_fusion_and_discard_ratio():
    maps = [random_attention(1, 3, 5)]
    fused_max = maps[0].amax(dim=1)[0] + torch.eye(5)
    torch.testing.assert_close(
        attention_rollout(maps, head_fusion="max")[0], fused_max / fused_max.sum(-1, keepdim=True)
    )
    sharp = attention_rollout(maps, discard_ratio=0.5)
    # by hand: zero the 12 smallest of the 25 fused weights, except CLS-to-CLS, then add I and renormalise
    fused = maps[0].mean(dim=1)[0].double().numpy().ravel()
    smallest = [i for i in np.argsort(fused, kind="stable")[:12] if i != 0]
    fused[smallest] = 0.0
    expected = fused.reshape(5, 5) + np.eye(5)
    np.testing.assert_allclose(sharp[0].numpy(), expected / expected.sum(-1, keepdims=True), rtol=1e-5)
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout(maps, head_fusion="median")
    with pytest.raises(ValueError, match="empty"):
        attention_rollout([])


def test_rollout_of_a_real_model_gives_a_cls_map_per_image():
    model = vitlab.create_model("ViT-Test").eval()
    images = torch.randn(3, 3, 32, 32)
    maps = model.get_attention_maps(images)
    rollout = attention_rollout(maps)
    assert rollout.shape == (3, 17, 17)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(3, 17))
    grid = rollout_to_grid(rollout, 4)
    assert grid.shape == (3, 4, 4)
    np.testing.assert_allclose(grid[1].ravel(), rollout[1, 0, 1:].numpy())
    assert rollout_to_grid(rollout[0], 4).shape == (4, 4)
    fig = plot_rollout(images, grid, titles=["a", "b", "c"])
    assert len(fig.axes) == 7  # two rows of three and the colour bar
    assert len(plot_rollout(images, grid, colorbar=False).axes) == 6


# --- mean attention distance ----------------------------------------------------------------------
def mean_pairwise_distance(grid, patch):
    points = [(r * patch, c * patch) for r in range(grid) for c in range(grid)]
    return sum(math.dist(p, q) for p, q in itertools.product(points, points)) / len(points) ** 2


def test_mean_attention_distance_of_uniform_attention_is_the_mean_pairwise_distance():
    grid, patch, tokens = 4, 8, 1 + 16
    uniform = torch.full((2, 3, tokens, tokens), 1.0 / tokens)  # includes the CLS token, which is dropped
    distance = mean_attention_distance([uniform, uniform], grid_size=grid, patch_size=patch)
    assert distance.shape == (2, 3)
    np.testing.assert_allclose(distance, mean_pairwise_distance(grid, patch), rtol=1e-12)
    assert uniform_attention_distance(grid, patch) == pytest.approx(mean_pairwise_distance(grid, patch), rel=1e-12)


def test_mean_attention_distance_of_diagonal_attention_is_zero():
    diagonal = torch.eye(1 + 9).expand(1, 2, 10, 10)
    np.testing.assert_array_equal(mean_attention_distance([diagonal], grid_size=3, patch_size=16), np.zeros((1, 2)))


def test_mean_attention_distance_of_attending_to_the_right_neighbour():
    grid, patch = 5, 16
    attention = torch.zeros(1, 1, grid * grid, grid * grid)  # no CLS token here
    for i in range(grid * grid):
        right = i + 1 if (i % grid) < grid - 1 else i  # the last column attends to itself
        attention[0, 0, i, right] = 1.0
    expected = patch * (grid - 1) / grid  # one patch away for all but the last column
    np.testing.assert_allclose(mean_attention_distance([attention], grid, patch), [[expected]])


def test_mean_attention_distance_rejects_a_grid_larger_than_the_tokens():
    with pytest.raises(ValueError, match="grid"):
        mean_attention_distance([random_attention(1, 1, 10)], grid_size=4, patch_size=16)


def test_plot_attention_distance_draws_one_dot_per_head():
    values = np.random.default_rng(0).uniform(0, 200, size=(4, 3))
    fig = plot_attention_distance({"scratch": values, "pretrained": values}, uniform=117.0)
    assert len(fig.axes) == 2
    offsets = np.concatenate([c.get_offsets()[:, 1] for c in fig.axes[0].collections])
    np.testing.assert_allclose(np.sort(offsets), np.sort(values.ravel()))
    assert fig.axes[1].get_lines()[0].get_ydata()[0] == 117.0  # the uniform-attention line


# --- position embeddings --------------------------------------------------------------------------
def test_position_embedding_similarity_is_cosine_similarity_on_the_grid():
    model = vitlab.create_model("ViT-Test")
    sim = position_embedding_similarity(model)
    assert sim.shape == (4, 4, 4, 4)
    pos = model.pos_embed[0, 1:].detach()  # (16, D), CLS dropped
    a, b = pos[1 * 4 + 2], pos[3 * 4 + 0]  # patch (1, 2) and patch (3, 0)
    expected = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    assert sim[1, 2, 3, 0] == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(sim.reshape(16, 16).diagonal(), 1.0, atol=1e-6)
    np.testing.assert_allclose(sim, sim.transpose(2, 3, 0, 1), atol=1e-6)
    fig = plot_position_embedding_similarity(sim)
    mosaic = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(mosaic[5:9, 10:14], sim[1, 2], atol=1e-6)  # tile (1, 2) with 1-pixel gaps
    plt.close(fig)
    fig = plot_position_embedding_similarity(sim, every=3)  # the tiles of patch rows and columns 0 and 3
    mosaic = fig.axes[0].images[0].get_array()
    assert mosaic.shape == (10, 10)
    np.testing.assert_allclose(mosaic[5:9, 0:4], sim[3, 0], atol=1e-6)
    assert [tick.get_text() for tick in fig.axes[0].get_xticklabels()] == ["1", "4"]
    plt.close(fig)
    with pytest.raises(ValueError, match="every must be a positive integer"):
        plot_position_embedding_similarity(sim, every=0)


# --- patch embedding filters ----------------------------------------------------------------------
def test_embedding_filter_components_are_orthonormal_principal_directions():
    model = vitlab.create_model("ViT-Test", hidden_size=64, num_heads=4)  # 64 filters of 3 x 8 x 8
    components, ratio = embedding_filters_pca(model, n_components=28)
    assert components.shape == (28, 3, 8, 8)
    flat = components.reshape(28, -1).double()
    torch.testing.assert_close(flat @ flat.T, torch.eye(28, dtype=torch.float64), atol=1e-5, rtol=0)
    # reference: eigenvectors of the filters' covariance matrix, with numpy
    filters = model.patch_embed.proj.weight.detach().double().reshape(64, -1).numpy()
    centred = filters - filters.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    np.testing.assert_allclose(ratio.numpy(), eigenvalues[:28] / eigenvalues.sum(), rtol=1e-4, atol=1e-7)
    for i in range(3):  # the leading directions, up to sign
        assert abs(float(flat[i].numpy() @ eigenvectors[:, i])) == pytest.approx(1.0, abs=1e-4)
    fig = plot_embedding_filters(components)
    assert sum(bool(ax.images) for ax in fig.axes) == 28


def test_embedding_filters_pca_clips_to_the_number_of_filters():
    components, ratio = embedding_filters_pca(vitlab.create_model("ViT-Test"), n_components=100)
    assert components.shape[0] == 32 and ratio.shape == (32,)  # 32 filters of 192 values


# --- TensorBoard runs -----------------------------------------------------------------------------
def write_run(path, losses, accuracies):
    with SummaryWriter(log_dir=str(path)) as writer:
        for step, loss in enumerate(losses):
            writer.add_scalar("train/loss", loss, global_step=step * 10)
        for step, accuracy in enumerate(accuracies):
            writer.add_scalar("val/accuracy", accuracy, global_step=step * 20)


def test_read_scalars_reads_back_what_summary_writer_wrote(tmp_path):
    write_run(tmp_path / "run", [2.5, 1.25, 0.625], [0.1, 0.7])
    scalars = read_scalars(tmp_path / "run")
    assert sorted(scalars) == ["train/loss", "val/accuracy"]
    steps, wall_times, values = scalars["train/loss"]
    np.testing.assert_array_equal(steps, [0, 10, 20])
    np.testing.assert_array_equal(values, [2.5, 1.25, 0.625])
    assert np.all(np.diff(wall_times) >= 0)
    np.testing.assert_allclose(scalars["val/accuracy"][2], [0.1, 0.7], rtol=1e-6)  # stored as float32


def test_read_scalars_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_scalars(tmp_path / "missing")
    write_run(tmp_path / "parent" / "inner", [1.0], [0.5])
    with pytest.raises(FileNotFoundError, match="inner"):
        read_scalars(tmp_path / "parent")


def test_plot_runs_draws_every_run_against_steps_and_time(tmp_path):
    write_run(tmp_path / "a", [2.0, 1.0], [0.2, 0.4])
    write_run(tmp_path / "b", [3.0, 2.0, 1.0], [0.3])
    fig, runs = plot_runs({"scratch": tmp_path / "a", "finetune": tmp_path / "b"})
    assert len(fig.axes) == 4  # 2 tags x (steps, time)
    lines = fig.axes[0].get_lines()  # train/loss against steps
    assert [line.get_label() for line in lines] == ["scratch", "finetune"]
    np.testing.assert_array_equal(lines[1].get_ydata(), [3.0, 2.0, 1.0])
    np.testing.assert_array_equal(runs["scratch"]["train/loss"][0], [0, 10])
    minutes = fig.axes[1].get_lines()[0].get_xdata()  # train/loss against time since the writer opened
    assert 0 <= minutes[0] <= minutes[1] < 1
    np.testing.assert_allclose(fig.axes[2].get_lines()[0].get_ydata(), [20.0, 40.0], rtol=1e-6)  # in percent
    assert fig.axes[2].get_ylabel() == "val/accuracy (%)"
    np.testing.assert_allclose(runs["scratch"]["val/accuracy"][2], [0.2, 0.4], rtol=1e-6)  # returned as stored
    with pytest.raises(ValueError, match="train/loss"):
        plot_runs({"a": tmp_path / "a"}, tags=["lr"])


# --- classification results -----------------------------------------------------------------------
def test_confusion_matrix_matches_a_hand_count():
    labels = [0, 0, 1, 1, 1, 2, 2, 2]
    preds = [0, 1, 1, 1, 2, 2, 0, 2]
    expected = np.array(
        [
            [1, 1, 0],  # true 0: once right, once called 1
            [0, 2, 1],  # true 1: twice right, once called 2
            [1, 0, 2],  # true 2: twice right, once called 0
        ]
    )
    matrix = confusion_matrix(torch.tensor(preds), np.array(labels), num_classes=3)
    np.testing.assert_array_equal(matrix, expected)
    fig = plot_confusion_matrix(matrix, ["cat", "dog", "ship"])
    assert fig.axes[0].get_title() == "accuracy 62.5%"
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="entries"):
        confusion_matrix([0, 1], [0], num_classes=3)
    lines = describe_confusion(matrix, ["cat", "dog", "ship"], pairs=2).splitlines()
    assert lines[0] == "right per class: dog 67%, ship 67%, cat 50%"  # ties keep the class order
    assert lines[1] == "most confused pairs (both ways): cat/dog 1, cat/ship 1"  # dog/ship also 1: the top two kept


def test_show_misclassified_titles_true_and_predicted():
    images = torch.rand(6, 3, 8, 8) * 2 - 1
    fig = show_misclassified(images, preds=[0, 2, 1, 1, 0, 2], labels=[0, 1, 1, 0, 0, 2], class_names="abc")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["b\n-> c", "a\n-> b"]


# --- images ---------------------------------------------------------------------------------------
def test_show_patches_cuts_the_image_into_its_grid():
    image = torch.rand(3, 32, 48)
    fig = show_patches(image, patch_size=16)
    assert len(fig.axes) == 2 * 3
    np.testing.assert_allclose(fig.axes[4].images[0].get_array(), image[:, 16:32, 16:32].permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match="multiple of 16"):
        show_patches(torch.rand(3, 30, 32), patch_size=16)


def test_to_display_maps_common_ranges_to_unit_interval():
    np.testing.assert_allclose(to_display(torch.tensor([[[-1.0, 1.0]]] * 3)), [[[0, 0, 0], [1, 1, 1]]])
    np.testing.assert_allclose(to_display(np.full((2, 2, 3), 255, dtype=np.uint8)), np.ones((2, 2, 3)))
    assert to_display(torch.rand(1, 4, 4)).shape == (4, 4)
    bright = torch.full((3, 2, 2), 0.5)  # 0.5 in [-1, 1] data is 0.75 on screen; unguessable without the range
    np.testing.assert_allclose(to_display(bright, value_range=(-1, 1)), np.full((2, 2, 3), 0.75))
    np.testing.assert_allclose(to_display(bright), np.full((2, 2, 3), 0.5))
