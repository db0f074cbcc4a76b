"""Held-out text sets for the `perplexity` harness task: (doc id, text) pairs.

Named sets read HARNESS_DATA_DIR; any other value is a file path (UTF-8, a BOM allowed):
a JSON list or JSONL of alpaca rows (instruction, input, output), chat rows
(messages) or plain rows (text). Alpaca rows are rendered as plain text
"instruction\\n\\ninput\\n\\noutput" (no chat template) so perplexity compares
the same bytes across models.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import SuiteError
from harness.settings import Settings
from harness.suites.golden import ALPACA_HELDOUT_ROWS
from harness.textfile import read_utf8


def text_set_file(settings: Settings, data: str) -> Path:
    """The file a text set reads: under HARNESS_DATA_DIR for a named set, `data` itself for a path."""
    if data == "alpaca_heldout":
        return settings.data_dir / "instruction" / "alpaca" / "alpaca_5000.json"
    if data == "gsm8k_test":
        return settings.data_dir / "gsm8k" / "test.jsonl"
    return Path(data)


def load_text_set(settings: Settings, data: str) -> list[tuple[str, str]]:
    """(doc id, text) pairs of a named text set (alpaca_heldout, gsm8k_test) or a file."""
    path = text_set_file(settings, data)
    rows = _read_rows(path)
    if data == "alpaca_heldout":
        start, stop = ALPACA_HELDOUT_ROWS
        return [(f"alpaca/{i}", _row_text(rows[i], f"alpaca_5000.json row {i}")) for i in range(start, min(stop, len(rows)))]
    if data == "gsm8k_test":
        return [(f"gsm8k-test/{i}", f"Question: {r['question']}\nAnswer: {r['answer']}") for i, r in enumerate(rows)]
    return [(f"{path.stem}/{i}", _row_text(r, f"{path} row {i}")) for i, r in enumerate(rows)]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    text = read_utf8(path, what="text set")
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SuiteError(f"text set {path}:{e.lineno}: not valid JSON: {e.msg}") from e
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SuiteError(f"text set {path}:{line_no}: not valid JSON: {e.msg} (column {e.colno})") from e
    return rows


def _row_text(row: Any, where: str) -> str:
    if not isinstance(row, dict):
        raise SuiteError(f"{where}: expected an object with text, instruction+output, or messages; got {str(row)[:80]}")
    if "text" in row:
        return str(row["text"])
    if "instruction" in row and "output" in row:
        parts = [row["instruction"], row.get("input") or "", row["output"]]
        return "\n\n".join(p.strip() for p in parts if p and p.strip())
    if "messages" in row:
        return "\n\n".join(m["content"] for m in row["messages"])
    raise SuiteError(f"{where}: expected text, instruction+output, or messages; got keys {sorted(row)}")
