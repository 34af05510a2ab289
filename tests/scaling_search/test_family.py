"""B0 -> B7: the published table reproduced exactly, the formula family, coefficients files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from effnas.results import FAMILY
from scaling_search.family import (Coefficients, dropout_at, family_table, format_family,
                                   load_coefficients, run_family)
from search_space import ArchSpec, count_flops, count_params, reference_spec

# REFERENCE.md: params of efficientnet-pytorch 0.7.1 (1000 classes) and the paper's FLOPs.
PAPER_PARAMS = [5_288_548, 7_794_184, 9_109_994, 12_233_232, 19_341_616, 30_389_784, 43_040_704, 66_347_960]
PAPER_FLOPS = [0.39e9, 0.70e9, 1.0e9, 1.8e9, 4.2e9, 9.9e9, 19e9, 37e9]
PAPER_RES = [224, 240, 260, 300, 380, 456, 528, 600]
PAPER_DROPOUT = [0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5]


def test_paper_table_reproduces_reference_params_exactly_and_flops_within_5_percent():
    b0 = reference_spec("efficientnet-b0")
    df, specs = family_table(b0, "paper")
    assert list(df.columns) == list(FAMILY.columns)
    assert list(df["name"]) == [f"b{i}" for i in range(8)]
    assert list(df["params"]) == PAPER_PARAMS
    assert list(df["resolution"]) == PAPER_RES
    assert list(df["dropout"]) == PAPER_DROPOUT
    for flops, paper in zip(df["flops"], PAPER_FLOPS):
        assert abs(flops - paper) / paper < 0.05, (flops, paper)
    for i, (name, spec) in enumerate(specs.items()):  # the specs are the published references
        assert spec == reference_spec(f"efficientnet-{name}")
        assert count_params(spec) == PAPER_PARAMS[i]
        assert ArchSpec.from_string(df["arch"][i]) == spec
    assert df["ideal_ratio"].tolist() == [2.0 ** p for p in range(8)]


def test_formula_family_is_deterministic_and_grows_with_phi():
    b0 = reference_spec("efficientnet-b0")
    coeffs = {"alpha": 1.2, "beta": 1.1, "gamma": 1.15}
    df, specs = family_table(b0, coeffs)
    again, _ = family_table(b0, Coefficients(1.2, 1.1, 1.15))
    pd.testing.assert_frame_equal(df, again)
    assert df["params"].is_monotonic_increasing and df["params"].is_unique
    assert df["flops"].is_monotonic_increasing and df["flops"].is_unique
    for phi, row in df.iterrows():
        assert row["depth"] == pytest.approx(1.2 ** phi) and row["width"] == pytest.approx(1.1 ** phi)
        assert row["resolution"] == round(224 * 1.15 ** phi)
        assert row["dropout"] == pytest.approx(0.2 + 0.3 * phi / 7, abs=5e-5)
        assert row["flops"] == count_flops(specs[row["name"]], row["resolution"])
        assert row["flops_ratio"] == pytest.approx(row["flops"] / count_flops(b0, 224))
        assert row["ideal_ratio"] == 2.0 ** phi
        assert row["ratio_vs_2phi"] == pytest.approx(row["flops_ratio"] / 2.0 ** phi)
        assert row["formula_ratio"] == pytest.approx(1.92027 ** phi)
    assert specs["b0"] == b0
    # rounding moves FLOPs away from 2^phi: phi = 1 is about 2.5x (REFERENCE.md), not 2x or 1.92x
    assert 2.4 < df["flops_ratio"][1] < 2.7
    text = format_family(df)
    assert "x2^phi" in text and "FLOPs/2^phi" in text and len(text.splitlines()) == 10


def test_dropout_is_linear_from_b0_to_b7_and_held_beyond():
    assert [dropout_at(p) for p in (0, 7, 9)] == [0.2, 0.5, 0.5]
    assert dropout_at(3, (0.1, 0.8)) == pytest.approx(0.4)
    df, _ = family_table(reference_spec("efficientnet-b0"), {"alpha": 1.2, "beta": 1.1, "gamma": 1.15},
                         max_phi=2, dropout=(0.1, 0.8))
    assert list(df["dropout"]) == [0.1, 0.2, 0.3]


@pytest.mark.parametrize("coefficients,max_phi,needle", [
    ({"alpha": 1.2, "beta": 1.1}, 7, "missing gamma"),
    ({"alpha": 1.2, "beta": 1.1, "gamma": 0.9}, 7, "gamma=0.9 is below 1"),
    ({"alpha": 1.2, "beta": 1.1, "gamma": "x"}, 7, "gamma must be a number"),
    ({"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "product": 2.0}, 7, "does not match"),
    ({"alpha": 1.2, "beta": 1.1, "gamma": 1.15}, -1, "max_phi must be >= 0"),
    ("paper", 8, "max_phi must be <= 7"),
    ("papr", 3, "coefficients must be 'paper'"),
])
def test_bad_coefficients_and_phi_are_one_line_errors(coefficients, max_phi, needle):
    with pytest.raises(ValueError) as info:
        family_table(reference_spec("efficientnet-b0"), coefficients, max_phi=max_phi)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_load_coefficients_checks_the_file(tmp_path):
    good = tmp_path / "coefficients.yaml"
    good.write_text(yaml.safe_dump({"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "product": 1.92027,
                                    "base_resolution": 32}))
    coeffs, data = load_coefficients(good)
    assert coeffs == Coefficients(1.2, 1.1, 1.15) and data["base_resolution"] == 32
    assert load_coefficients(tmp_path)[0] == coeffs  # the folder holding it
    cases = {"missing.yaml": None, "list.yaml": "[1, 2]", "bad.yaml": "alpha: [1.2\n",
             "res.yaml": "alpha: 1.2\nbeta: 1.1\ngamma: 1.15\nbase_resolution: 16\n",
             "arch.yaml": "alpha: 1.2\nbeta: 1.1\ngamma: 1.15\nbase: r1_k4_s11_e1_i32_o16\n"}
    needles = {"missing.yaml": "not found", "list.yaml": "expected a mapping", "bad.yaml": "not valid YAML",
               "res.yaml": "base_resolution must be an integer >= 32", "arch.yaml": "bad base architecture"}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ValueError) as info:
            load_coefficients(tmp_path / name)
        assert needles[name] in str(info.value) and "\n" not in str(info.value), name


def test_run_family_writes_table_and_one_json_per_model(tmp_path):
    out = run_family({"results_dir": str(tmp_path), "coefficients": "paper", "base": "efficientnet-b0",
                      "max_phi": 3})
    folder = tmp_path / "family-paper"
    assert out.folder == folder
    pq, csv = pd.read_parquet(folder / "family.parquet"), pd.read_csv(folder / "family.csv")
    assert list(pq["params"]) == PAPER_PARAMS[:4] and list(csv["params"]) == PAPER_PARAMS[:4]
    for name in ("b0", "b1", "b2", "b3"):
        record = json.loads((folder / "family" / f"{name}.json").read_text())
        spec = ArchSpec.from_dict(record["spec"])
        assert spec == ArchSpec.from_string(record["arch"]) == reference_spec(f"efficientnet-{name}")
        assert record["params"] == count_params(spec) and record["resolution"] == spec.resolution


def test_reference_base_takes_the_head_asked_for(tmp_path):
    out = run_family({"results_dir": str(tmp_path), "coefficients": {"alpha": 1.2, "beta": 1.1, "gamma": 1.15},
                      "num_classes": 10, "in_channels": 1, "base_resolution": 32, "max_phi": 2})
    b0 = out.specs["b0"]
    assert (b0.num_classes, b0.in_channels, b0.resolution) == (10, 1, 32)
    assert list(out.table["resolution"]) == [32, 37, 42]
    assert out.folder == tmp_path / "family-custom"


def test_family_cli_paper_table(tmp_path, st):
    proc = st.run("scale-family", tmp_path, "base=efficientnet-b0", "coefficients=paper", f"results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "66,347,960" in proc.stdout and "x2^phi" in proc.stdout
    df = pd.read_csv(tmp_path / "family-paper" / "family.csv")
    assert list(df["params"]) == PAPER_PARAMS
    assert sorted(p.name for p in (tmp_path / "family-paper" / "family").iterdir()) == \
        [f"b{i}.json" for i in range(8)]
    assert "family/b0.json .. b7.json" in proc.stdout


def test_family_cli_of_b0_alone_names_its_one_file(tmp_path, st):
    proc = st.run("scale-family", tmp_path, "coefficients=paper", "max_phi=0", f"results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("family/b0.json")  # not 'b0.json .. b0.json'
    assert [p.name for p in (tmp_path / "family-paper" / "family").iterdir()] == ["b0.json"]


def test_family_table_is_written_and_read_through_one_schema(tmp_path):
    """scale-family writes family.{parquet,csv} with the FAMILY schema; the report reads every
    documented column back with the schema's dtypes."""
    from effnas.results import FAMILY
    from report import load_results
    from scaling_search.family import run_family

    out = run_family({"results_dir": str(tmp_path), "study_name": "fam", "max_phi": 3})
    for name in ("family.parquet", "family.csv"):
        df = load_results(out.folder / name)
        assert list(df.columns)[:len(FAMILY.columns)] == list(FAMILY.columns)
        for column, dtype in FAMILY.columns.items():
            assert str(df[column].dtype) == dtype or (dtype == "int64" and str(df[column].dtype) == "Int64"), column
        assert df["ratio_vs_2phi"].tolist() == pytest.approx((df["flops_ratio"] / 2.0 ** df["phi"]).tolist())
        assert df["accuracy"].isna().all()  # nothing trained without train.upto
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `family.parquet`"))
    for column in FAMILY.columns:
        assert f"`{column}" in row or f" {column}" in row or f"{column}`" in row, column
