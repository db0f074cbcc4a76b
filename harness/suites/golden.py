"""Golden sets: JSONL records of prompts with ideal answers and optional mechanical checks.

One record per line:

    {"id": "greet-1", "prompt": "Say hello in French.", "ideal": "Bonjour",
     "tags": ["smoke"], "checks": {"must_include": ["bonjour"], "regex": "^\\\\W*bonjour"}}

`prompt` (raw text, sent through the chat template as one user turn) or
`messages` (a chat ending with a user turn) must be given, not both, and the
prompt (or that last turn) must not be blank. `checks` are optional and
mechanical: `regex` (Python re.search, case-insensitive), `must_include`
(case-insensitive substrings, all required) and `json_schema` (the output
must parse as JSON and validate). Files are UTF-8 (a BOM is allowed); a bad
line is a SuiteError naming the file and line number, and each item keeps
`source` ("file:line") so a run can say where an unscored item came from. Judges (LLM-as-judge) read the same records through
`load_golden`; `ideal` is their reference answer.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from harness import atomic
from harness.errors import SuiteError
from harness.records import GenerateRequest, Message
from harness.settings import Settings
from harness.suites.golden_smoke import SMOKE_ITEMS
from harness.textfile import read_utf8

ALPACA_HELDOUT_ROWS = (4500, 5000)  # rows of alpaca_5000.json kept out of fine-tuning demos

GENERATION_TAG = "golden@1"  # caches golden answers: eval and the judge's win rates share them


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant"]
    content: str


class Checks(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    regex: str | None = None
    must_include: list[str] = Field(default_factory=list)
    json_schema: dict[str, Any] | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"regex {v!r} does not compile: {e}") from None
        return v

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(v)
            except jsonschema.SchemaError as e:
                raise ValueError(f"json_schema is not a valid JSON Schema: {e.message}") from None
        return v


class GoldenItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1)
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    ideal: str | None = None  # reference answer for judges; checks do not need it
    tags: list[str] = Field(default_factory=list)
    checks: Checks | None = None
    _source: str | None = PrivateAttr(None)  # "file:line" (or "file row N"), set by the loaders

    @model_validator(mode="after")
    def _one_input(self) -> "GoldenItem":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.messages is not None and (not self.messages or self.messages[-1].role != "user"):
            raise ValueError("messages must end with a user turn")
        # A blank prompt would be answered and scored as a fail: a silent wrong result.
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt is empty")
        if self.messages is not None and not self.messages[-1].content.strip():
            raise ValueError("the last user turn of messages is empty")
        return self

    @property
    def source(self) -> str | None:
        """Where the item was read: "file:line" for JSONL, "file row N" for a JSON list; None if built in code."""
        return self._source

    def at(self, source: str) -> "GoldenItem":
        """This item, noting where it was read."""
        self._source = source
        return self

    def to_request(self, *, max_new_tokens: int = 256) -> GenerateRequest:
        """The greedy chat request for this item (a prompt becomes one user turn)."""
        if self.messages is not None:
            msgs = tuple(Message(m.role, m.content) for m in self.messages)
            return GenerateRequest(messages=msgs, max_new_tokens=max_new_tokens)
        return GenerateRequest.chat(self.prompt or "", max_new_tokens=max_new_tokens)


def load_golden(path: Path | str) -> list[GoldenItem]:
    """Read and validate a golden-set JSONL; SuiteError names file and line of the first bad rows.

    Blank lines are skipped; ids must be unique. All bad lines (up to 10) are
    reported at once so a file can be fixed in one pass.
    """
    path = Path(path)
    text = read_utf8(path, what="golden set")
    items: list[GoldenItem] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{line_no}: not valid JSON: {e.msg} (column {e.colno})")
            continue
        try:
            item = GoldenItem.model_validate(raw)
        except ValidationError as e:
            for err in e.errors():
                key = ".".join(str(p) for p in err["loc"]) or "record"
                problems.append(f"{path}:{line_no}: {key}: {err['msg'].removeprefix('Value error, ')}")
            continue
        if item.id in first_line:
            problems.append(f"{path}:{line_no}: id '{item.id}' already used on line {first_line[item.id]}")
            continue
        first_line[item.id] = line_no
        items.append(item.at(f"{path}:{line_no}"))
    if problems:
        more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise SuiteError("\n".join(problems[:10]) + more)
    if not items:
        raise SuiteError(f"golden set {path}: no records")
    return items


def _instruction_prompt(instruction: str, inp: str) -> str:
    return f"{instruction.strip()}\n\n{inp.strip()}" if inp and inp.strip() else instruction.strip()


def load_self_instruct(path: Path) -> list[GoldenItem]:
    """self-instruct's user_oriented_instructions.jsonl: one item per task instance.

    ids are `<task id>/<instance index>`; tags hold "self_instruct" and the
    motivating app. Outputs become `ideal`; there are no mechanical checks.
    """
    items = []
    for line_no, line in enumerate(read_utf8(path, what="golden set").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            for k, inst in enumerate(d["instances"]):
                tags = ["self_instruct"] + ([d["motivation_app"]] if d.get("motivation_app") else [])
                items.append(GoldenItem(id=f"{d['id']}/{k}", prompt=_instruction_prompt(d["instruction"], inst.get("input", "")),
                                        ideal=inst.get("output"), tags=tags).at(f"{path}:{line_no}"))
        except (json.JSONDecodeError, KeyError, TypeError, ValidationError) as e:
            raise SuiteError(f"{path}:{line_no}: not a self-instruct record: {e}") from e
    return items


def load_alpaca(path: Path, rows: tuple[int, int] | None = None) -> list[GoldenItem]:
    """An alpaca JSON list (instruction, input, output) as golden items; ids are `alpaca/<row>`.

    `rows` = (start, stop) keeps a slice (e.g. the held-out tail). Rows with an
    empty output are skipped: they have no reference answer.
    """
    try:
        data = json.loads(read_utf8(path, what="alpaca JSON"))
    except json.JSONDecodeError as e:
        raise SuiteError(f"alpaca JSON {path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from e
    start, stop = rows or (0, len(data))
    items = []
    for i in range(start, min(stop, len(data))):
        d = data[i]
        if not isinstance(d, dict) or "instruction" not in d or "output" not in d:
            raise SuiteError(f"{path}: row {i}: expected instruction, input, output; got {str(d)[:120]}")
        if d["output"].strip():
            try:
                item = GoldenItem(id=f"alpaca/{i}", prompt=_instruction_prompt(d["instruction"], d.get("input", "")),
                                  ideal=d["output"], tags=["alpaca"])
            except ValidationError as e:
                raise SuiteError(f"{path}: row {i}: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
            items.append(item.at(f"{path} row {i}"))
    return items


def golden_set_file(settings: Settings, data: str) -> Path | None:
    """The file a golden set reads: under HARNESS_DATA_DIR for a named set, `data` itself for a
    path; None for the smoke set, which is built in (written from code when needed)."""
    if data == "smoke":
        return None
    if data == "self_instruct":
        return settings.data_dir / "instruction" / "self_instruct" / "user_oriented_instructions.jsonl"
    if data == "alpaca_heldout":
        return settings.data_dir / "instruction" / "alpaca" / "alpaca_5000.json"
    return Path(data)


def load_golden_set(settings: Settings, data: str) -> list[GoldenItem]:
    """A named golden set (smoke, self_instruct, alpaca_heldout) or a golden JSONL path."""
    path = golden_set_file(settings, data)
    if path is None:
        return load_golden(smoke_file(settings))
    if data == "self_instruct":
        return load_self_instruct(path)
    if data == "alpaca_heldout":
        return load_alpaca(path, ALPACA_HELDOUT_ROWS)
    return load_golden(path)


def smoke_file(settings: Settings) -> Path:
    """The shipped smoke set (harness.suites.golden_smoke), written as golden JSONL under HARNESS_HOME:
    the file `harness judge --golden smoke` and the golden-smoke suite read, and a format example."""
    path = settings.home / "golden" / "smoke.jsonl"
    text = "".join(json.dumps(d) + "\n" for d in SMOKE_ITEMS)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic.write_text(path, text)
    return path


def run_checks(item: GoldenItem, output: str) -> tuple[bool | None, list[str]]:
    """(passed, failure reasons). passed is None when the item has no checks.

    >>> run_checks(GoldenItem(id="x", prompt="p", checks=Checks(must_include=["Paris"])), "It is paris.")
    (True, [])
    >>> run_checks(GoldenItem(id="x", prompt="p", checks=Checks(regex="^[0-9]+$")), "forty")
    (False, ["regex '^[0-9]+$' did not match"])
    """
    c = item.checks
    if c is None or (c.regex is None and not c.must_include and c.json_schema is None):
        return None, []
    reasons = []
    if c.regex is not None and not re.search(c.regex, output, flags=re.IGNORECASE | re.MULTILINE):
        reasons.append(f"regex {c.regex!r} did not match")
    for s in c.must_include:
        if s.lower() not in output.lower():
            reasons.append(f"missing {s!r}")
    if c.json_schema is not None:
        import jsonschema

        try:
            jsonschema.validate(_extract_json(output), c.json_schema)
        except ValueError as e:
            reasons.append(f"not JSON: {e}")
        except jsonschema.ValidationError as e:
            reasons.append(f"JSON fails schema: {e.message}")
    return not reasons, reasons


def _extract_json(text: str) -> Any:
    """Parse the output as JSON, allowing a ```json fenced block around it."""
    m = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL)
    return json.loads(m.group(1) if m else text.strip())
