"""keras_vit.training.study: every study's arms, and a --quick run that writes its table and plot."""

import pytest
from PIL import Image

from keras_vit.training.config import RunConfig
from keras_vit.training import study, train, trainer
from support import run_module

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers


def test_training_range():
    assert trainer.training_range(1437) == range(0, 1437)
    assert trainer.training_range(1437, 0.0, 0.1) == range(0, 144)
    assert trainer.training_range(1437, 0.5, 0.5) == range(718, 1437)
    assert trainer.training_range(10, 0.0, 0.01) == range(0, 1)  # at least one example
    with pytest.raises(ValueError, match="offset \\+ fraction <= 1"):
        trainer.training_range(100, 0.6, 0.5)


def test_each_study_builds_run_configs_that_its_flags_give_back():
    for name, spec in study.studies().items():
        for arm in spec.arms:
            for fields in filter(None, (arm.fields, arm.pretrain)):
                config = RunConfig(output_dir="x", **fields, **study.TRAINING)
                assert config.model in ("ViT", "ResNet")
                assert RunConfig.from_flags(train.parser().parse_args([*config.flags(), "--output_dir", "x"])) == config
    scale = study.studies()["data_scale"]
    assert {arm.series for arm in scale.arms} == {"ViT", "hybrid", "ResNet"}
    assert sorted({arm.x for arm in scale.arms}) == [0.1, 0.25, 0.5, 1.0]
    scaling = {arm.name: arm for arm in study.studies()["scaling"].arms}  # Figure 5's axes: size, patch, epochs
    assert scaling["ViT M/8"].fields["patch_size"] == 2 * scaling["ViT M"].fields["patch_size"]
    assert (scaling["ViT M, 2x epochs"].fields, scaling["ViT M, 2x epochs"].epochs_factor) == (scaling["ViT M"].fields, 2)


def test_resnet_refuses_transformer_flags(capsys):
    assert train.main(["--model", "ResNet", "--patch_size", "4", "--output_dir", "x"]) == 2
    assert "--model ResNet has no Transformer: --patch_size are for ViT models" in capsys.readouterr().err


def test_table_8_in_full_is_laid_out_4x3():
    """The arms of every placement, and the Markdown's 4x3 table (its runs are tested by the quick study above)."""
    args = study.parser().parse_args(["posemb", "--placements", "input", "every_layer", "every_layer_shared",
                                      "--out", "table8.md"])
    spec = study.studies(tuple(args.placements))["posemb"]
    assert len(spec.arms) == 8  # none and relative at the input only
    rows = {arm.name: [{"accuracy": 0.5 + i / 100, "train_seconds": 1.0, **{f"{k}shot": 0.3 + i / 100 for k in study.SHOTS}}]
            for i, arm in enumerate(spec.arms)}
    args.dataset, args.quick = "digits", True
    table = study.markdown(spec, spec.arms, rows, args, 1, 1)
    grid = table[table.index("the paper's Table 8 metric, laid out as it is"):].splitlines()
    cells = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:5]] for line in grid if line.startswith("| ")}
    assert cells[""] == ["input", "every_layer", "every_layer_shared"]
    assert cells["none"] == ["30.0 (50.0)", "N/A", "N/A"] and cells["relative"][1:] == ["N/A", "N/A"]
    assert cells["learned_1d"] == ["31.0 (51.0)", "32.0 (52.0)", "33.0 (53.0)"]
    assert cells["learned_2d"] == ["34.0 (54.0)", "35.0 (55.0)", "36.0 (56.0)"]


def test_a_quick_scaling_study_plots_accuracy_against_compute(tmp_path):
    out = tmp_path / "scaling.md"
    result = run_module("keras_vit.training.study", "scaling", "--dataset", "digits", "--quick", "--out", str(out), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|") for line in out.read_text().splitlines() if line.startswith(("| ViT ", "| hybrid ", "| ResNet "))]
    assert [row[1].strip() for row in rows] == ["ViT S", "ViT M", "ResNet S", "ResNet M"]
    compute = {row[1].strip(): float(row[-3]) for row in rows}
    assert compute["ViT S"] < compute["ViT M"] and compute["ResNet S"] < compute["ResNet M"]  # 3 steps of 32 each
    assert "Differs from the paper in scale" in out.read_text()
    assert "selects its model (best.keras, early stopping) on train[1293:1437] and is scored on test." in out.read_text()
    assert "; run 1 of 4, about " in result.stdout and " min left" in result.stdout  # the time the study will take
    assert len(list((tmp_path / "scaling_runs").iterdir())) == 4
    # Started again, it reuses the finished runs.
    again = run_module("keras_vit.training.study", "scaling", "--dataset", "digits", "--quick", "--out", str(out), timeout=600)
    assert again.returncode == 0 and again.stdout.count("Nothing to do") == 4
    with Image.open(tmp_path / "scaling.png") as image:
        assert image.format == "PNG"
