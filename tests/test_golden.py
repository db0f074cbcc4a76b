"""Golden-set format: validation with line numbers, loaders, mechanical checks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import SuiteError
from harness.suites.golden import (Checks, GoldenItem, load_alpaca, load_golden, load_golden_set, load_self_instruct,
                                   run_checks)


def test_shipped_smoke_set_is_valid(settings) -> None:
    items = load_golden_set(settings, "smoke")  # written from harness.suites.golden_smoke as golden JSONL
    assert len(items) == 12 and all(i.checks for i in items)
    assert load_golden(settings.home / "golden" / "smoke.jsonl") == items


def test_malformed_row_reports_line_number(tmp_path: Path) -> None:
    p = tmp_path / "g.jsonl"
    p.write_text("\n".join([
        json.dumps({"id": "a", "prompt": "hi", "ideal": "hello"}),
        "",
        json.dumps({"id": "b", "ideal": "no prompt"}),  # line 3: neither prompt nor messages
        '{"id": "c", "prompt": "x",',  # line 4: broken JSON
        json.dumps({"id": "a", "prompt": "dup"}),  # line 5: duplicate id
        json.dumps({"id": "d", "prompt": "x", "checks": {"regex": "("}}),  # line 6: bad regex
        json.dumps({"id": "e", "prompt": "x", "tagz": []}),  # line 7: unknown key
    ]) + "\n")
    with pytest.raises(SuiteError) as e:
        load_golden(p)
    msg = str(e.value)
    assert f"{p}:3: record: give exactly one of prompt or messages" in msg
    assert f"{p}:4: not valid JSON" in msg
    assert f"{p}:5: id 'a' already used on line 1" in msg
    assert f"{p}:6: checks.regex: regex '(' does not compile" in msg
    assert f"{p}:7: tagz: Extra inputs are not permitted" in msg


def test_messages_and_request(tmp_path: Path) -> None:
    item = GoldenItem(id="m", messages=[{"role": "user", "content": "hi"}])
    req = item.to_request(max_new_tokens=5)
    assert req.messages[0].content == "hi" and req.max_new_tokens == 5
    assert GoldenItem(id="p", prompt="hey").to_request().messages[-1].role == "user"
    with pytest.raises(ValueError, match="end with a user turn"):
        GoldenItem(id="m", messages=[{"role": "assistant", "content": "hi"}])


def test_self_instruct_and_alpaca_loaders(data_dir: Path) -> None:
    items = load_self_instruct(data_dir / "instruction" / "self_instruct" / "user_oriented_instructions.jsonl")
    assert len(items) >= 252 and items[0].id == "user_oriented_task_0/0" and items[0].ideal
    assert "self_instruct" in items[0].tags
    alpaca = load_alpaca(data_dir / "instruction" / "alpaca" / "alpaca_5000.json", (0, 10))
    assert 9 <= len(alpaca) <= 10 and alpaca[0].id == "alpaca/0"


def test_checks() -> None:
    item = GoldenItem(id="j", prompt="p", checks=Checks(json_schema={"type": "object", "required": ["a"]}))
    assert run_checks(item, '```json\n{"a": 1}\n```') == (True, [])
    ok, reasons = run_checks(item, "{}")
    assert ok is False and "fails schema" in reasons[0]
    assert run_checks(item, "not json")[0] is False
    assert run_checks(GoldenItem(id="n", prompt="p"), "anything") == (None, [])
    both = GoldenItem(id="b", prompt="p", checks=Checks(regex=r"\d", must_include=["x", "y"]))
    assert run_checks(both, "x") == (False, [r"regex '\\d' did not match", "missing 'y'"])
