"""The shipped aligned set-up: its files match their checksums, a built set-up exports and restores end to end at
tiny size (same weights, nothing retrained), a changed setting builds instead of restoring, a tampered file is
refused with the fix, and (slow) the shipped SmolLM2 set-up reproduces its recorded verdicts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from agl_trl.experiments import config, prepare_setup
from agl_trl.experiments.config import apply_overrides, tiny_config
from agl_trl.experiments.shipped import (
    DEFAULT_SETUP,
    SETUPS_ROOT,
    STAGES,
    ShippedSetup,
    ShippedSetupError,
    export_setup,
    shipped_setup,
)
from agl_trl.models import tiny_llama
from agl_trl.utils import files_sha256


def test_the_default_setup_is_shipped_whole_and_matches_its_checksums() -> None:
    setup = shipped_setup(DEFAULT_SETUP)
    assert set(setup.manifest["stages"]) == set(STAGES)
    on_disk = {
        p.relative_to(setup.root).as_posix()
        for p in setup.root.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", "CARD.md")
    }
    assert on_disk == set(setup.manifest["files"]), "files on disk and in the manifest differ"
    setup.verify()  # every SHA-256
    adapter = setup.root / "aligned" / "adapter" / "adapter_model.safetensors"
    assert adapter.stat().st_size < 16 * 2**20, "the safety adapter should stay a few MB"
    build = setup.manifest["build"]
    for key in ("precision", "cpu_fast_bf16_flags", "torch_threads", "agl_trl", "torch", "trl", "transformers"):
        assert key in build, key
    assert (setup.root / "CARD.md").is_file() and setup.version in (setup.root / "CARD.md").read_text()


def test_the_package_ships_the_setup_files() -> None:
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"setups/**/*"' in text
    assert SETUPS_ROOT.name == "setups" and SETUPS_ROOT.parent.name == "agl_trl"


def _loader(calls: list[int]):
    def load():
        calls.append(1)
        return tiny_llama(vocab_size=512, seed=0)

    return load


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny set-up built from scratch (``shipped=None``) and its export."""
    root = tmp_path_factory.mktemp("shipped")
    cfg = tiny_config(0)
    prepare_setup(cfg, root / "built", _loader([]), progress=False, log=None, validation=True, shipped=None)
    exported = export_setup(root / "built", root / "export", "tiny-llama", "v0", {"precision": "fp32"})
    return root / "built", exported


def test_rebuild_then_export_then_restore_end_to_end(built: tuple[Path, Path], tmp_path: Path) -> None:
    built_dir, exported = built
    source = ShippedSetup(exported, _loader(calls := []))
    logs: list[str] = []
    setup = prepare_setup(tiny_config(0), tmp_path / "restored", _loader(calls), False, logs.append, True, source)
    for stage in STAGES:
        assert setup.runner.records[stage].get("shipped") == "tiny-llama/v0", stage
    assert any("restoring from the shipped set-up tiny-llama/v0" in line for line in logs)
    assert len(calls) == 1  # the base model was loaded once, to merge the adapter; nothing was trained
    assert setup.setup_id == "tiny-llama/v0"
    built_w, restored_w = _weights(built_dir / "aligned" / "model"), _weights(setup.aligned_dir)
    assert built_w.keys() == restored_w.keys()
    assert all(torch.equal(built_w[k], restored_w[k]) for k in built_w)
    for stage in ("gen_aligned", "fisher"):
        assert files_sha256(built_dir / stage / "responses.json" if stage == "gen_aligned" else built_dir / stage /
                            "probe.jsonl") == files_sha256(setup.out / stage / (
            "responses.json" if stage == "gen_aligned" else "probe.jsonl"))  # fmt: skip
    # a second run finds every stage cached, and still knows where it came from
    again = prepare_setup(tiny_config(0), tmp_path / "restored", _loader([]), False, None, True, source)
    assert all(again.runner.records[s]["cached"] for s in STAGES) and again.setup_id == "tiny-llama/v0"


def test_a_changed_setting_builds_instead_of_restoring(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, exported = built
    cfg = apply_overrides(tiny_config(0), ["lora.alpha=3"])
    logs: list[str] = []
    setup = prepare_setup(cfg, tmp_path / "other", _loader([]), False, logs.append, False, ShippedSetup(exported))
    assert setup.runner.records["align_data"].get("shipped") == "tiny-llama/v0"  # its settings did not change
    assert "shipped" not in setup.runner.records["aligned"] and "shipped" not in setup.runner.records["fisher"]
    assert any("differ from the shipped set-up" in line for line in logs)
    assert setup.setup_id != "tiny-llama/v0" and len(setup.setup_id) == 12  # a local build: its weights' hash


def test_a_rebuild_is_refused_in_a_folder_whose_setup_was_restored(built: tuple[Path, Path], tmp_path: Path) -> None:
    """Stages after the set-up (fine-tunes, measurements) keep their keys across a rebuild, so rebuilding in place
    would leave them measured against the shipped set-up: refused, with the fix."""
    _, exported = built
    out = tmp_path / "x"
    prepare_setup(tiny_config(0), out, _loader([]), False, None, False, ShippedSetup(exported))
    with pytest.raises(ShippedSetupError, match=r"restored from the shipped tiny-llama/v0 .*--rebuild-setup --out"):
        prepare_setup(tiny_config(0), out, _loader([]), False, None, False, None)
    rebuilt = prepare_setup(tiny_config(0), tmp_path / "fresh", _loader([]), False, None, False, None)
    assert not any("shipped" in rebuilt.runner.records[s] for s in ("align_data", "aligned", "gen_aligned", "fisher"))


def test_a_tampered_file_is_refused_with_the_fix(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, exported = built
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    rows = copy / "align_data" / "rows.json"
    rows.write_text(rows.read_text().replace("[", "[ ", 1))
    with pytest.raises(ShippedSetupError, match=r"align_data/rows.json has SHA-256 .*rebuild with `agl-trl demo"):
        prepare_setup(tiny_config(0), tmp_path / "out", _loader([]), False, None, False, ShippedSetup(copy))
    (copy / "align_data" / "rows.json").unlink()
    with pytest.raises(ShippedSetupError, match="is missing"):
        ShippedSetup(copy).verify()
    with pytest.raises(ShippedSetupError, match="manifest.json missing"):
        ShippedSetup(tmp_path / "nowhere")


def test_export_refuses_a_folder_without_an_aligned_model(tmp_path: Path) -> None:
    with pytest.raises(ShippedSetupError, match="no finished `aligned` stage"):
        export_setup(tmp_path, tmp_path / "dest", "x", "v0", {})


# verdicts of the shipped set-up's aligned model, regenerated here and compared with the recorded ones
VERDICT_PROMPTS = 24


@pytest.mark.slow
def test_the_shipped_setup_reproduces_its_recorded_verdicts(tmp_path: Path) -> None:
    """Load SmolLM2 + the shipped adapter (merged), answer a fixed subset of the DriftCaps test prompts (the first
    VERDICT_PROMPTS in file order of each label, greedy), and compare with the answers and verdicts it recorded."""
    from agl_trl.evaluation.judges import make_judge
    from agl_trl.experiments.aligned import merge_adapter
    from agl_trl.generation import generate
    from agl_trl.models import load_default_model, load_pretrained

    setup = shipped_setup(DEFAULT_SETUP)
    merge_adapter(load_default_model, setup.root / "aligned" / "adapter", tmp_path / "model")
    model, tokenizer = load_pretrained(tmp_path / "model")
    rows = json.loads((setup.root / "gen_aligned" / "responses.json").read_text())
    chosen = [r for r in rows if r["label"] == "unsafe"][: VERDICT_PROMPTS // 2]
    chosen += [r for r in rows if r["label"] == "safe"][: VERDICT_PROMPTS // 2]
    from agl_trl.driftcaps import load_driftcaps

    prompts = {it.id: it.prompt for it in load_driftcaps(split="test")}
    settings = setup.manifest["stages"]["gen_aligned"]["settings"]["eval"]
    gens = generate(model, tokenizer, [prompts[r["id"]] for r in chosen], settings["max_new_tokens"], 12,
                    progress=False)  # fmt: skip
    verdicts = make_judge(settings["judge"]).judge([prompts[r["id"]] for r in chosen], [g.text for g in gens])
    assert [bool(v) for v in verdicts] == [r["refusal"] for r in chosen]
    same_text = sum(g.text == r["response"] for g, r in zip(gens, chosen, strict=True))
    assert same_text >= len(chosen) - 2, f"only {same_text}/{len(chosen)} answers reproduced word for word"


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["demo_config", "default_config", "quick_config"])
def test_every_demo_preset_restores_the_whole_shipped_setup(preset: str, tmp_path: Path) -> None:
    """`make demo`, `--full` and `--quick` (and the peers and scaling benchmarks built on them) restore every set-up
    stage whose prompts they share with the shipped build: a setting added to a stage key breaks this."""
    from agl_trl.models import load_default_model

    cfg = getattr(config, preset)(0)
    setup = prepare_setup(
        cfg, tmp_path, load_default_model, progress=False, log=None, validation=preset != "quick_config"
    )
    restored = {s for s in STAGES if setup.runner.records.get(s, {}).get("shipped") == DEFAULT_SETUP}
    expected = {"align_data", "aligned", "fisher"}
    # the aligned model's answers are restored where the shipped set-up answered the same prompts: --quick answers a
    # smaller subset, and a DriftCaps version with more test prompts than the one it was built on (v3 over v2) has them
    # answered here
    answered = shipped_setup(DEFAULT_SETUP).manifest["stages"]["gen_aligned"]["settings"]["ids"]
    if preset != "quick_config" and answered == [it.id for it in setup.eval_subset]:
        expected |= {"gen_aligned", "gen_aligned_validation"}
    assert expected <= restored, f"{preset}: not restored: {sorted(expected - restored)}"
    assert setup.setup_id == DEFAULT_SETUP


@pytest.mark.parametrize("preset", ["demo_config", "default_config", "quick_config"])
def test_the_shipped_aligned_model_and_fisher_match_the_current_probe_split(
    preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fast, no model: the stage keys prepare_setup computes for the safety data, the aligned model and the Fisher
    (which read only the DriftCaps probe split) equal the shipped set-up's, so every preset restores them instead of
    retraining. Restoring the aligned stage skips the adapter merge here; the answer stages are stubbed."""
    import agl_trl.experiments.setup as setup_module
    import agl_trl.models

    class NoMerge(ShippedSetup):
        def install(self, stage: str, directory: Path) -> dict:
            if stage == "aligned":
                self.verify(stage)
                return dict(self.manifest["stages"][stage].get("result", {}))
            return super().install(stage, directory)

    def no_model() -> tuple:
        raise AssertionError("a stage was built instead of restored")

    monkeypatch.setattr(agl_trl.models, "load_pretrained", lambda *args, **kwargs: (None, None))
    monkeypatch.setattr(setup_module, "evaluate_generations", lambda *args, **kwargs: {})
    lines: list[str] = []
    cfg = getattr(config, preset)(0)
    setup = prepare_setup(cfg, tmp_path, no_model, progress=False, log=lines.append, validation=True,
                          shipped=NoMerge(shipped_setup(DEFAULT_SETUP).root))  # fmt: skip
    restored = {s for s in STAGES if setup.runner.records.get(s, {}).get("shipped") == DEFAULT_SETUP}
    assert {"align_data", "aligned", "fisher"} <= restored, lines
    assert not any("settings differ" in line for line in lines)
    assert setup.shipped_version == DEFAULT_SETUP
