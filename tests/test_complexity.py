"""Golden complexity: every row of the official table, exactly in parameters and within 0.1% in
MACs at 224 and 256 (in fact exact); torchvision's ResNet-50 figures for the baselines."""

import csv

import pytest
from conftest import REFERENCE

from bl_keras import models, profile


def official_rows():
    with open(REFERENCE / "official_complexity.tsv") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def builder_args(row_name):
    """'bl_resnet50_a4_b2' -> ('bl_resnet50', {'alpha': 4, 'beta': 2})."""
    name, kwargs = row_name, {}
    if "_a" in row_name and row_name.rsplit("_", 2)[-2].startswith("a"):
        name, a, b = row_name.rsplit("_", 2)
        kwargs = {"alpha": int(a[1:]), "beta": int(b[1:])}
    return name, kwargs


@pytest.mark.parametrize("row", official_rows(), ids=lambda r: r["model"])
def test_official_complexity(row):
    name, kwargs = builder_args(row["model"])
    model = models.get(name, **kwargs)
    assert profile.count_params(model) == int(row["params"])
    for size in (224, 256):
        macs = profile.count_macs(model, size)
        assert macs == pytest.approx(int(row[f"macs_{size}"]), rel=1e-3)


def test_resnet50_matches_torchvision():
    model = models.resnet50()
    assert profile.count_params(model) == 25_557_032
    assert profile.count_macs(model, 224) == 4_089_184_256


@pytest.mark.parametrize(
    "name,params,gmacs",
    [  # torchvision's published figures (params exact, GMACs rounded to 0.01)
        ("resnet101", 44_549_160, 7.80),
        ("resnet152", 60_192_808, 11.51),
        ("resnext50_32x4d", 25_028_904, 4.23),
        ("resnext101_32x4d", 44_177_704, 7.97),
    ],
)
def test_baselines_match_torchvision(name, params, gmacs):
    model = models.get(name)
    assert profile.count_params(model) == params
    assert profile.count_macs(model, 224) / 1e9 == pytest.approx(gmacs, abs=0.006)


def test_count_params_excludes_moving_statistics():
    model = models.resnet20_cifar()
    assert profile.count_params(model) < sum(w.numpy().size for w in model.weights)


def test_count_macs_needs_a_size():
    model = models.resnet20_cifar(input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="full input shape"):
        profile.count_macs(model)
    assert profile.count_macs(model, 32) == profile.count_macs(models.resnet20_cifar())


def test_mac_table_attributes_layers():
    records = profile.mac_table(models.bl_resnet20_cifar(), (32, 32, 3))
    paths = {r.path for r in records}
    assert "stage1/big_block1/conv1" in paths and "predictions" in paths
    assert sum(r.macs for r in records) == profile.count_macs(models.bl_resnet20_cifar())


def test_concat_merge_matches_table7():
    """Table 7: bL-ResNet-50 with concatenation, 20.57M params and 2.01 GFLOPs."""
    model = models.bl_resnet50(merge="concat")
    assert profile.count_params(model) == pytest.approx(20.57e6, rel=2e-3)
    assert profile.count_macs(model, 224) == pytest.approx(2.01e9, rel=0.04)


def test_bilinear_upsampling_costs_no_macs():
    model = models.bl_resnet50(upsample="bilinear")
    assert profile.count_macs(model, 224) == 2_856_058_880
