from __future__ import annotations

import json
import math

import pytest

from agl_trl.driftcaps import load_driftcaps
from agl_trl.evaluation.cli import main
from agl_trl.evaluation.report import SCHEMA, SCHEMA_VERSION, render_markdown, write_report
from agl_trl.evaluation.runner import evaluate_models

METRIC_KEYS = {"refusal_unsafe", "over_refusal", "attack_success", "incoherent"}
RATE_KEYS = {"k", "n", "rate", "ci_low", "ci_high"}


@pytest.fixture
def model_dir_with_adapters(tmp_path, tiny_model_factory):
    """A saved tiny model plus two saved LoRA adapters: 'noop' (B = 0) and 'lora' (random, large)."""
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_model_factory(seed=3)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    dirs = {}
    for name, init in (("noop", True), ("lora", False)):
        m, _ = tiny_model_factory(seed=3)
        cfg = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=init)
        peft_model = get_peft_model(m, cfg)
        peft_model.save_pretrained(tmp_path / name)
        dirs[name] = str(tmp_path / name)
    return tmp_path / "base", dirs


def test_evaluate_models_and_report(tmp_path, model_dir_with_adapters, driftcaps_file):
    base_dir, adapters = model_dir_with_adapters
    items = load_driftcaps("test", path=driftcaps_file)
    res = evaluate_models(str(base_dir), adapters=adapters, items=items, max_new_tokens=6, batch_size=4, progress=False)
    assert res["schema"] == SCHEMA and res["schema_version"] == SCHEMA_VERSION
    assert list(res["models"]) == ["base", "noop", "lora"]
    assert res["reference"] == "base" and res["baseline"] == "lora"
    assert res["models"]["base"]["role"] == "reference" and res["models"]["lora"]["role"] == "baseline"
    for name, m in res["models"].items():
        assert set(m["overall"]) >= METRIC_KEYS
        assert set(m["overall"]["refusal_unsafe"]) == RATE_KEYS
        assert m["overall"]["refusal_unsafe"]["n"] == sum(i.label == "unsafe" for i in items)
        assert set(m["by_category"]) == {i.category for i in items}
        assert len(res["responses"][name]) == len(items)
    # the no-op adapter answers exactly like the base model: zero drift, zero KL
    assert [r["response"] for r in res["responses"]["noop"]] == [r["response"] for r in res["responses"]["base"]]
    assert res["models"]["noop"]["overall"]["drift"]["value"] == 0.0
    assert res["models"]["noop"]["kl"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert res["models"]["lora"]["kl"]["mean"] > 1e-4
    assert res["models"]["base"]["kl"] is None

    paths = write_report(res, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["models"]["lora"]["kl"]["mean"] == pytest.approx(res["models"]["lora"]["kl"]["mean"])
    md = paths["markdown"].read_text()
    assert "| lora | baseline |" in md and "judge: **keyword**" in md and "## Refusal rate on unsafe prompts" in md
    # it opens with the two-axis answer and its picture, before any table; the no-op adapter changes nothing
    answer = md.index("## The answer")
    assert answer < md.index("![the answer](drift_overview.png)") < md.index("|")
    assert "`noop` " in md and "(0.0 [0.0, 0.0] points vs `base`)" in md
    for key in ("refusal_plot", "overview_plot"):
        png = paths[key].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_report_handles_nan_and_missing_groups(tmp_path):
    res = {
        "judge": {"name": "keyword"},
        "reference": "base",
        "models": {
            "base": {
                "role": "reference",
                "overall": {
                    "refusal_unsafe": {"k": 0, "n": 0, "rate": math.nan, "ci_low": math.nan, "ci_high": math.nan}
                },
                "by_category": {},
                "kl": None,
            },
        },
    }
    paths = write_report(res, tmp_path, plots=True)
    data = json.loads(paths["json"].read_text())  # allow_nan=False in the writer: NaN became null
    assert data["models"]["base"]["overall"]["refusal_unsafe"]["rate"] is None
    assert "n/a" in render_markdown(res)


def test_cli_end_to_end(tmp_path, model_dir_with_adapters, driftcaps_file, capsys):
    base_dir, adapters = model_dir_with_adapters
    out = tmp_path / "cli-out"
    rc = main(
        [
            "--model",
            str(base_dir),
            "--adapter",
            f"lora={adapters['lora']}",
            "--dataset",
            str(driftcaps_file),
            "--limit",
            "2",
            "--max-new-tokens",
            "4",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    assert {p.name for p in out.iterdir()} >= {
        "drift.json",
        "drift.md",
        "refusal_by_category.png",
        "drift_overview.png",
    }
    data = json.loads((out / "drift.json").read_text())
    assert data["config"]["max_new_tokens"] == 4 and data["dataset"]["n_prompts"] <= 6
    assert "DriftCaps drift report" in capsys.readouterr().out
    assert main(["--model", str(base_dir), "--adapter", "oops", "--out", str(out)]) == 2
    assert main(["--model", str(tmp_path / "missing"), "--dataset", str(driftcaps_file), "--out", str(out)]) == 2
