"""Run-log readers (jsonl, CSV), seed aggregation, and the errors on bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agl_trl.scaling.io import (
    DEFAULT_METRIC,
    RunLogError,
    RunRecord,
    aggregate,
    metrics_in,
    read_run_log,
    write_run_log,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_round_trip_and_seed_aggregation(tmp_path):
    records = [RunRecord("lora", 1e6, loss, "responses", 8, seed) for seed, loss in enumerate([0.10, 0.14, 0.12])] + [
        RunRecord("agl", 1e6, 0.05, "responses", 8, 0),
        RunRecord("agl", 1e6, 0.02, "general", 8, 0),
    ]
    path = write_run_log(tmp_path / "runs.jsonl", records[:2])
    write_run_log(path, records[2:])  # appends
    back = read_run_log(path)
    assert back == records
    assert metrics_in(back) == ["responses", "general"]
    points = aggregate(back, "responses")
    assert list(points) == ["lora", "agl"]
    (lora,) = points["lora"]
    assert (lora.budget, lora.rank, lora.n_seeds) == (1e6, 8, 3)
    assert lora.mean == pytest.approx(0.12) and lora.std == pytest.approx(0.02)  # sample std (ddof=1)
    assert lora.sem == pytest.approx(0.02 / math.sqrt(3))
    assert points["agl"][0].std == 0.0 and points["agl"][0].n_seeds == 1


def test_csv_with_optional_columns_blank_or_absent(tmp_path):
    path = write(
        tmp_path / "runs.csv",
        "method,budget,loss,rank,seed,notes\nlora,1000,0.5,,,x\nlora,2000,0.7,16,1,y\nagl,1000,0.2,,,\n",
    )
    records = read_run_log(path)
    assert records[0] == RunRecord("lora", 1000.0, 0.5, DEFAULT_METRIC, None, None)
    assert records[1] == RunRecord("lora", 2000.0, 0.7, DEFAULT_METRIC, 16, 1)
    points = aggregate(records, DEFAULT_METRIC)
    assert [p.budget for p in points["lora"]] == [1000.0, 2000.0]
    # a file without a known suffix is sniffed
    assert read_run_log(write(tmp_path / "runs.log", '{"method": "a", "budget": 5, "loss": 1}\n'))[0].budget == 5.0


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("missing.csv", "method,loss\nlora,0.1\n", r"lacks column\(s\) budget"),
        ("missing.jsonl", '{"method": "lora", "budget": 10}\n', r"runs\.jsonl:1: missing column\(s\) loss"),
        ("zero.csv", "method,budget,loss\nlora,10,0.1\nlora,0,0.2\n", r":3: budget must be > 0"),
        ("negative.jsonl", '{"method": "lora", "budget": -5, "loss": 0.1}\n', "budget must be > 0"),
        ("nan.csv", "method,budget,loss\nlora,10,nan\n", r"'loss' is 'nan' \(NaN/inf\)"),
        ("nan.jsonl", '{"method": "lora", "budget": 10, "loss": NaN}\n', r"NaN/inf"),
        ("text.csv", "method,budget,loss\nlora,many,0.1\n", "'budget' is not a number"),
        ("empty_loss.csv", "method,budget,loss\nlora,10,\n", "'loss' is empty"),
        ("rank.jsonl", '{"method": "lora", "budget": 10, "loss": 0.1, "rank": 2.5}\n', "positive integer"),
        ("nomethod.jsonl", '{"method": "", "budget": 10, "loss": 0.1}\n', "'method' is empty"),
        ("bad.jsonl", '{"method": "lora", "budget": 10, "loss": 0.1}\n{oops\n', r":2: not valid JSON"),
        ("list.jsonl", "[1, 2]\n", "expected a JSON object"),
        ("blank.jsonl", "\n\n", "no runs"),
        ("empty.csv", "", "empty CSV"),
        (
            "dup.jsonl",
            '{"method": "a", "budget": 1, "loss": 0.1, "seed": 0}\n{"method": "a", "budget": 1, "loss": 0.2, "seed": 0}\n',
            "duplicate run",
        ),
    ],
)
def test_bad_logs_raise_clear_errors(tmp_path, name, text, match):
    path = write(tmp_path / name.replace("missing.jsonl", "runs.jsonl"), text)
    with pytest.raises(RunLogError, match=match):
        read_run_log(path)


def test_missing_file_and_unknown_metric(tmp_path):
    with pytest.raises(RunLogError, match="does not exist"):
        read_run_log(tmp_path / "nope.jsonl")
    records = read_run_log(write(tmp_path / "r.jsonl", json.dumps({"method": "a", "budget": 1, "loss": 0.1}) + "\n"))
    with pytest.raises(RunLogError, match=f"no runs with metric 'general'; the log has: {DEFAULT_METRIC}"):
        aggregate(records, "general")


def test_budget_unit_of_reads_a_uniform_column(tmp_path: Path) -> None:
    from agl_trl.scaling.io import budget_unit_of

    log = tmp_path / "a.jsonl"
    log.write_text('{"method": "a", "budget": 1, "loss": 1, "budget_unit": "examples"}\n' * 2)
    assert budget_unit_of(log) == "examples"
    log.write_text(log.read_text() + '{"method": "a", "budget": 2, "loss": 1}\n')
    assert budget_unit_of(log) is None  # not every row says it
    csv_log = tmp_path / "b.csv"
    csv_log.write_text("method,budget,loss,budget_unit\na,1,1,steps\na,2,1,steps\n")
    assert budget_unit_of(csv_log) == "steps"
    csv_log.write_text("method,budget,loss\na,1,1\n")
    assert budget_unit_of(csv_log) is None


def test_read_and_append_jsonl(tmp_path: Path) -> None:
    from agl_trl.utils import JSONLError, append_jsonl, iter_jsonl, read_jsonl

    path = append_jsonl(tmp_path / "sub" / "rows.jsonl", [{"a": 1}, {"b": Path("x")}])
    append_jsonl(path, [{"c": 3}])
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"b": "x"}\n{"c": 3}\n'
    assert read_jsonl(path) == [{"a": 1}, {"b": "x"}, {"c": 3}]
    assert read_jsonl(tmp_path / "none.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "none.jsonl")
    write(path, '{"a": 1}\n\n[1, 2]\n{"cut": \n')
    assert [n for n, _ in iter_jsonl(path, skip_invalid=True)] == [1]
    with pytest.raises(JSONLError, match=r"rows.jsonl:3: expected a JSON object per line") as err:
        read_jsonl(path)
    assert (err.value.lineno, err.value.got, err.value.json_error) == (3, "list", None)
    write(path, '{"a": 1}\n{"cut": \n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: invalid JSON \(Expecting value\)"):
        read_jsonl(path)
