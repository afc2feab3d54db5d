"""Stage caching and resume logic of the demo pipeline, settings overrides and the eval subset rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from agl_trl.demo.cli import main
from agl_trl.driftcaps import PromptItem
from agl_trl.experiments import stratified_subset
from agl_trl.experiments.config import apply_overrides, default_config, quick_config
from agl_trl.experiments.stages import MARKER, StageRunner, stage_key


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, directory: Path) -> dict:
        self.calls += 1
        (directory / "out.txt").write_text(str(self.calls))
        return {"calls": self.calls}


def test_stage_key_is_order_independent_and_sensitive() -> None:
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})
    assert stage_key({"a": 1}) != stage_key({"a": 2})


def test_finished_stage_is_skipped_and_returns_recorded_result(tmp_path: Path) -> None:
    fn = Counter()
    assert StageRunner(tmp_path, log=None).run("s", {"x": 1}, fn) == {"calls": 1}
    runner = StageRunner(tmp_path, log=None)
    assert runner.run("s", {"x": 1}, fn) == {"calls": 1}
    assert fn.calls == 1
    assert runner.records["s"]["cached"] is True
    assert (tmp_path / "s" / "out.txt").read_text() == "1"


def test_changed_settings_rerun_and_clear_the_folder(tmp_path: Path) -> None:
    fn = Counter()
    StageRunner(tmp_path, log=None).run("s", {"x": 1}, fn)
    (tmp_path / "s" / "stale.txt").write_text("old")
    StageRunner(tmp_path, log=None).run("s", {"x": 2}, fn)
    assert fn.calls == 2
    assert not (tmp_path / "s" / "stale.txt").exists()


def test_upstream_change_invalidates_downstream(tmp_path: Path) -> None:
    up, down = Counter(), Counter()
    for x in (1, 1, 2):
        runner = StageRunner(tmp_path, log=None)
        runner.run("up", {"x": x}, up)
        runner.run("down", {"y": 0}, down, depends=("up",))
    assert (up.calls, down.calls) == (2, 2)
    with pytest.raises(RuntimeError, match="depends"):
        StageRunner(tmp_path, log=None).run("down", {"y": 0}, down, depends=("up",))


def test_interrupted_stage_leaves_no_marker_and_reruns(tmp_path: Path) -> None:
    def boom(directory: Path) -> dict:
        (directory / "partial.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path, log=None).run("s", {"x": 1}, boom)
    assert not (tmp_path / "s" / MARKER).exists()
    fn = Counter()
    StageRunner(tmp_path, log=None).run("s", {"x": 1}, fn)
    assert fn.calls == 1
    assert not (tmp_path / "s" / "partial.txt").exists()


def test_overrides() -> None:
    cfg = apply_overrides(default_config(), ["agl.lambda_align=2.5", "probe.kind=mixed", "eval.n_safe=null"])
    assert cfg.agl.lambda_align == 2.5 and cfg.probe.kind == "mixed" and cfg.eval.n_safe is None
    with pytest.raises(ValueError, match="unknown setting"):
        apply_overrides(default_config(), ["agl.lambda_nope=1"])
    with pytest.raises(ValueError, match="section"):
        apply_overrides(default_config(), ["nope.x=1"])
    with pytest.raises(ValueError):
        apply_overrides(default_config(), ["agl.lambda_align"])


def test_quick_is_smaller_than_default() -> None:
    d, q = default_config(), quick_config()
    assert q.quick and not d.quick
    assert q.task.steps < d.task.steps and q.eval.n_unsafe is not None
    # the same set-up settings, so --quick restores the shipped set-up instead of training a smaller one
    assert (q.align, q.probe, q.fisher, q.lora, q.seed) == (d.align, d.probe, d.fisher, d.lora, d.seed)
    assert d.eval.n_unsafe is None and d.eval.n_safe is None  # the default reports on the whole test split
    assert q.eval.n_unsafe is not None and q.eval.n_val_unsafe is not None


def _item(i: int, label: str, category: str) -> PromptItem:
    return PromptItem(id=f"{label}-{i}", prompt=f"p{i}", label=label, category=category)


def test_stratified_subset_round_robin_over_categories_in_file_order() -> None:
    items = [_item(i, "unsafe", "a") for i in range(5)] + [_item(i + 5, "unsafe", "b") for i in range(2)]
    items += [_item(i + 7, "safe", "c") for i in range(3)]
    chosen = stratified_subset(items, 4, "unsafe")
    assert [it.id for it in chosen] == ["unsafe-0", "unsafe-1", "unsafe-5", "unsafe-6"]
    assert len(stratified_subset(items, None, "safe")) == 3
    assert len(stratified_subset(items, 99, "unsafe")) == 7


def test_auto_threads_uses_every_core_whatever_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy machine (e.g. `make demo`'s own pip installs) no longer drops the demo to one thread."""
    from agl_trl import precision
    from agl_trl.experiments import training

    monkeypatch.setattr(precision.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    monkeypatch.setattr(precision.os, "getloadavg", lambda: (3.5, 3.0, 2.0))
    assert training.auto_threads() == 2


def test_cli_rejects_bad_override(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--quick", "--out", str(tmp_path), "--set", "agl.nope=1"]) == 2
    assert "unknown setting" in capsys.readouterr().err
