"""Run artefacts: the shareable mask folder and its model card, the sidecar checks, curves.png, TensorBoard."""

from __future__ import annotations

import json

import pytest
import torch

from ahamask import __version__
from ahamask.masking.checkpoint import (
    MaskFileError,
    load_mask,
    mask_geometry,
    read_mask_config,
    save_mask,
    save_mask_folder,
)
from ahamask.masking.mask import MaskShapeError
from ahamask.training.artifacts import (
    log_mask_image,
    mask_heatmap_figure,
    plot_training_curves,
    save_figure,
    write_mask_folder,
)
from ahamask.utils.logging import JsonlLogger, MultiLogger

# 2 layers x 4 heads (+1 FFN entry each): heads 0, 2, 3 of layer 0 and 1, 2 of layer 1 kept -> 5 of 8.
LOGITS = torch.tensor([3.0, -2.0, 0.5, 1.0, 9.0, -0.1, 2.0, 4.0, -3.0, 9.0])


def _assert_picture(path, min_side=150):
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) >= min_side
    assert float(pixels[..., :3].std()) > 0.05


def _write_folder(run_dir, base_model="tsinghua-ee/SALMONN"):
    write_mask_folder(
        run_dir,
        LOGITS,
        2,
        4,
        base_model=base_model,
        task="gender_recognition",
        data=["data/train.json", "data/extra.json"],
        steps=12,
        command="python train.py -c configs/tiny_config.yaml",
        valid_metrics={"loss": 0.312345},
    )


def test_mask_folder_holds_the_mask_its_sidecar_and_a_card(tmp_path):
    from huggingface_hub import ModelCard

    _write_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "mask.safetensors", "mask_config.json"]
    assert torch.equal(load_mask(tmp_path).values, LOGITS)  # the folder itself is a mask path
    assert torch.equal(load_mask(tmp_path / "mask.safetensors", n_layers=2, n_heads=4).values, LOGITS)
    text = (tmp_path / "mask_config.json").read_text()
    config = json.loads(text)
    assert list(config) == sorted(config)
    assert config["n_layers"] == 2 and config["n_heads"] == 4 and config["has_ffn"] is True
    assert config["ahamask_version"] == __version__ and config["task"] == "gender_recognition"
    assert config["base_model"] == "tsinghua-ee/SALMONN" and config["steps"] == 12
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == "tsinghua-ee/SALMONN" and card.data.library_name == "ahamask"
    assert "gender_recognition" in card.data.tags
    for fact in (
        "5/8 (62.5%)",
        "| training steps | 12 |",
        "`data/train.json`, `data/extra.json`",
        "| validation loss | 0.3123 |",
        "python train.py -c configs/tiny_config.yaml",
    ):
        assert fact in card.text, fact
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_local_base_model_stays_out_of_the_card_metadata(tmp_path):
    from huggingface_hub import ModelCard

    _write_folder(tmp_path, base_model=str(tmp_path / "tiny_bundle" / "llama"))
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model is None and "tiny_bundle/llama" in card.text


def test_load_names_the_dimension_that_differs(tmp_path):
    save_mask_folder(LOGITS, tmp_path, 2, 4)
    with pytest.raises(MaskShapeError, match=r"n_layers differs: the mask was made for 2, the model has 3"):
        load_mask(tmp_path, n_layers=3, n_heads=4)
    with pytest.raises(MaskShapeError, match=r"n_heads differs: the mask was made for 4, the model has 40"):
        load_mask(tmp_path, n_layers=2, n_heads=40)


def test_a_sidecar_beside_a_pth_is_checked(tmp_path):
    save_mask(LOGITS, tmp_path / "checkpoint_0.pth")
    assert mask_geometry(tmp_path / "checkpoint_0.pth") is None
    (tmp_path / "mask_config.json").write_text(json.dumps({"n_layers": 3, "n_heads": 4}))
    with pytest.raises(MaskFileError, match=r"holds 10 logits but states 3 layers x 4 heads, which needs 15"):
        load_mask(tmp_path / "checkpoint_0.pth")
    (tmp_path / "mask_config.json").write_text(json.dumps({"n_layers": "two", "n_heads": 4}))
    with pytest.raises(MaskFileError, match=r"mask_config.json: n_layers must be a positive integer"):
        read_mask_config(tmp_path / "checkpoint_0.pth")


def test_metadata_and_sidecar_must_agree(tmp_path):
    save_mask_folder(LOGITS, tmp_path, 2, 4)
    (tmp_path / "mask_config.json").write_text(json.dumps({"n_layers": 2, "n_heads": 3}))
    with pytest.raises(MaskFileError, match=r"n_heads is 4 in the file's metadata but 3 in mask_config.json"):
        load_mask(tmp_path)


def test_heatmap_picture_and_its_geometry_check(tmp_path):
    out = save_figure(mask_heatmap_figure(LOGITS, 2, 4, title="tiny"), tmp_path / "sub" / "mask.png")
    _assert_picture(out)
    with pytest.raises(MaskShapeError):
        mask_heatmap_figure(LOGITS, 3, 4)


def test_training_curves_from_the_trainer_jsonl(tmp_path):
    sink = JsonlLogger(tmp_path / "steps.jsonl")  # the trainer's own writer, so the format is the real one
    for step in range(1, 9):
        sink.log_dict(
            {
                "loss": 2.0 / step,
                "ce": 1.5 / step,
                "normalizer": 1.0,
                "lr": 1e-3,
                "tau": 4 - 0.3 * step,
                "active_heads": 8 - step // 2,
            },
            step,
        )
    sink.log_dict({"valid_loss": 0.4}, 8)
    sink.close()
    out = plot_training_curves(tmp_path / "steps.jsonl", tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    _assert_picture(out, min_side=400)


def test_training_curves_reject_bad_logs(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\nnot json\n')
    with pytest.raises(ValueError, match=r"steps.jsonl: line 2 is not JSON"):
        plot_training_curves(path, tmp_path / "c.png")
    path.write_text('{"step": 1, "valid_loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"no training step with a 'loss' value"):
        plot_training_curves(path, tmp_path / "c.png")
    with pytest.raises(FileNotFoundError, match="no such file"):
        plot_training_curves(tmp_path / "none.jsonl", tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


class _Writer:
    """Records what a SummaryWriter would be given."""

    def __init__(self):
        self.scalars, self.figures = {}, []

    def add_scalar(self, name, value, global_step):
        self.scalars[name] = (value, global_step)

    def add_figure(self, tag, figure, global_step, close):
        self.figures.append((tag, global_step))


def test_mask_image_and_per_layer_heads_go_to_tensorboard_only(tmp_path):
    writer = _Writer()
    jsonl = JsonlLogger(tmp_path / "steps.jsonl")
    assert log_mask_image(MultiLogger([jsonl, writer]), LOGITS, 2, 4, step=7) == 1
    jsonl.close()
    assert writer.scalars == {
        "mask/active_heads_layer_00": (3, 7),
        "mask/active_heads_layer_01": (2, 7),
        "mask/active_heads": (5, 7),
    }
    assert writer.figures == [("mask/heatmap", 7)]
    assert (tmp_path / "steps.jsonl").read_text() == ""  # 40 per-layer columns would swamp steps.jsonl
    assert log_mask_image(JsonlLogger(tmp_path / "other.jsonl"), LOGITS, 2, 4, step=1) == 0


@pytest.mark.slow
def test_tensorboard_logger_writes_the_image_and_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ahamask.utils.logging import TensorBoardLogger

    sink = TensorBoardLogger(tmp_path)
    assert log_mask_image(sink, LOGITS, 2, 4, step=3) == 1
    sink.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert "mask/heatmap" in events.Tags()["images"]
    assert [e.value for e in events.Scalars("mask/active_heads_layer_01")] == [2.0]
