"""Label Studio round trip: chosen sentences → tasks with pre-annotations, and a JSON export → the project's schema.

Formats as Label Studio documents them (no Label Studio code is used):
- tasks to import: a JSON list of ``{"data": {...}, "predictions": [{"model_version", "score", "result"}]}``;
- a result item: ``{"from_name", "to_name", "type": "choices", "value": {"choices": [...]}}``;
- the "JSON" export: a list of tasks, each with ``id``, ``data`` and ``annotations`` (``result``,
  ``was_cancelled``, ``ground_truth``, ``completed_by``, ``created_at``/``updated_at``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from xml.sax.saxutils import quoteattr

from train.domain import DEFAULT_TARGET, STANCE_LABELS, TOPIC_LABELS
from train.errors import TaggerError
from train.inputs import MAX_DATA_BYTES, read_utf8

log = logging.getLogger("tagger")

TEXT_NAME = "text"  # the <Text> object the choices label
CONTROLS = {"topics": TOPIC_LABELS, "stance": STANCE_LABELS}  # <Choices name=...> and the schema's labels
SELECTION_DATA = ("rank", "strategy", "uncertainty")  # task data that only describes the selection


def label_config() -> str:
    """The labeling config (XML) the tasks are written for: topics (several or none) and one stance."""

    def choices(name: str, labels: list[str], kind: str, required: bool) -> str:
        options = "".join(f"\n    <Choice value={quoteattr(label)}/>" for label in labels)
        extra = ' required="true"' if required else ""
        opening = f'  <Choices name="{name}" toName="{TEXT_NAME}" choice="{kind}" showInline="true"{extra}>'
        return f"{opening}{options}\n  </Choices>"

    return "\n".join(
        [
            "<View>",
            f'  <Text name="{TEXT_NAME}" value="${TEXT_NAME}"/>',
            '  <Header value="Stance toward:" size="5"/>',
            '  <Header value="$target" size="5"/>',
            '  <Header value="Topics (none, one or several)" size="6"/>',
            choices("topics", TOPIC_LABELS, "multiple", False),
            '  <Header value="Stance" size="6"/>',
            choices("stance", STANCE_LABELS, "single-radio", True),
            "</View>",
            "",
        ]
    )


def _result(control: str, chosen: list[str]) -> dict:
    return {"from_name": control, "to_name": TEXT_NAME, "type": "choices", "value": {"choices": list(chosen)}}


def to_tasks(rows: list[dict]) -> list[dict]:
    """Chosen rows (``train.selection.select``) → Label Studio tasks, the model's labels as a prediction."""
    tasks = []
    for row in rows:
        selection = row.get("selection", {})
        data = {k: v for k, v in row.items() if k not in ("topics", "stance", "suggested", "selection")}
        data.update({k: selection.get(k) for k in SELECTION_DATA})
        result = []
        if row.get("topics"):  # no topic suggested: no result (an empty choice list is not a choice)
            result.append(_result("topics", row["topics"]))
        if row.get("stance"):
            result.append(_result("stance", [row["stance"]]))
        prediction = {
            "model_version": str(selection.get("model", "")),
            "score": round(1.0 - float(selection.get("uncertainty", 0.0)), 4),  # Label Studio sorts on confidence
            "result": result,
        }
        tasks.append({"data": data, "predictions": [prediction]})
    return tasks


def tasks_json(rows: list[dict]) -> str:
    return json.dumps(to_tasks(rows), ensure_ascii=False, indent=2) + "\n"


def _tasks_with_lines(text: str, path: Path) -> list[tuple[int, object]]:
    """The elements of a top-level JSON list, each with the line it starts on."""
    decoder = json.JSONDecoder()

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    def fail(exc: json.JSONDecodeError) -> TaggerError:
        return TaggerError(f"{path} line {exc.lineno}: invalid JSON: {exc.msg}")

    pos = skip(0)
    if pos < len(text) and text[pos] == "\ufeff":
        pos = skip(pos + 1)
    if pos >= len(text) or text[pos] != "[":
        raise TaggerError(f"{path}: expected a JSON list of tasks (Label Studio's JSON export)")
    items, pos = [], skip(pos + 1)
    if pos < len(text) and text[pos] == "]":
        return items
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise fail(exc) from None
        items.append((text.count("\n", 0, pos) + 1, value))
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            break
        line = text.count("\n", 0, pos) + 1
        raise TaggerError(f"{path} line {line}: invalid JSON: expected ',' or ']' after a task")
    if skip(pos + 1) != len(text):
        raise TaggerError(f"{path} line {text.count(chr(10), 0, pos) + 1}: invalid JSON: extra data after the list")
    return items


def _labels(annotation: dict, where: str) -> dict[str, list[str]]:
    """The choices of one annotation, checked against the schema: {"topics": [...], "stance": [...]}."""
    result = annotation.get("result")
    if not isinstance(result, list):
        raise TaggerError(f"{where}: an annotation has no 'result' list")
    chosen: dict[str, list[str]] = {}
    for item in result:
        if not isinstance(item, dict) or item.get("type") != "choices":
            continue  # other controls (a comment box, say) carry no labels
        control = item.get("from_name")
        if control not in CONTROLS:
            raise TaggerError(
                f"{where}: choices from '{control}', expected 'topics' or 'stance' (the config of 'tagger select')"
            )
        value = item.get("value")
        values = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise TaggerError(f"{where}: '{control}' has no list of choices in value.choices")
        for label in values:
            if label not in CONTROLS[control]:
                shown = label[:40].encode("unicode_escape").decode() if not label.isprintable() else label[:40]
                raise TaggerError(
                    f"{where}: {control} label '{shown}' is not in the schema ({', '.join(CONTROLS[control])})"
                )
        chosen.setdefault(control, []).extend(values)
    return chosen


def _pick(annotations: list[dict]) -> dict:
    """The annotation that counts: one marked ground truth, else the one updated last."""
    marked = [a for a in annotations if a.get("ground_truth") is True]
    candidates = marked or annotations

    def when(pair: tuple[int, dict]) -> tuple[str, int]:
        return str(pair[1].get("updated_at") or pair[1].get("created_at") or ""), pair[0]

    return max(enumerate(candidates), key=when)[1]


def import_labels(path: Path) -> tuple[list[dict], dict[str, int]]:
    """A Label Studio JSON export → rows in the project's schema, and counts of what was skipped.

    A task without a submitted annotation is skipped; cancelled (skipped) annotations are ignored.
    Labels outside the schema, a task without text or stance, or a repeated id are errors naming the
    line and task.
    """
    path = Path(path)
    text = read_utf8(path, "Label Studio export", MAX_DATA_BYTES)
    rows, seen, counts = [], {}, {"unlabelled": 0, "disagreements": 0, "default_target": 0}
    for number, (line, task) in enumerate(_tasks_with_lines(text, path), start=1):
        task_id = task.get("id") if isinstance(task, dict) else None
        task_id = task_id if isinstance(task_id, int) and not isinstance(task_id, bool) else None
        where = f"{path} line {line} (task {number}" + (f", id {task_id})" if task_id is not None else ")")
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise TaggerError(f"{where}: a task needs a 'data' object (export in Label Studio's JSON format)")
        annotations = task.get("annotations")
        if not isinstance(annotations, list):
            raise TaggerError(
                f"{where}: no 'annotations' list (export in Label Studio's JSON format, not JSON-MIN or CSV)"
            )
        data = task["data"]
        if not isinstance(data.get("text"), str) or not data["text"].strip():
            raise TaggerError(f"{where}: no text in data.text")
        submitted = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
        if not submitted:
            counts["unlabelled"] += 1
            continue
        labels = [{k: sorted(set(v)) for k, v in _labels(a, where).items() if v} for a in submitted]
        picked = _pick(submitted)
        chosen = labels[next(i for i, a in enumerate(submitted) if a is picked)]
        if any(other != chosen for other in labels):
            counts["disagreements"] += 1
        stance = chosen.get("stance", [])
        if len(stance) != 1:
            raise TaggerError(f"{where}: expected exactly one stance choice, got {len(stance)}")
        record_id = str(data.get("id") or f"ls-{task_id if task_id is not None else number}")
        if record_id in seen:
            raise TaggerError(f"{where}: duplicate id '{record_id}' (first at line {seen[record_id]})")
        seen[record_id] = line
        target = data.get("target")
        if not isinstance(target, str) or not target.strip():
            target = DEFAULT_TARGET
            counts["default_target"] += 1
        row = {"id": record_id, **({"doc_id": data["doc_id"]} if data.get("doc_id") is not None else {})}
        row.update(
            text=data["text"],
            target=target,
            topics=[t for t in TOPIC_LABELS if t in chosen.get("topics", [])],
            stance=stance[0],
        )
        row.update({k: v for k, v in data.items() if k not in row and k not in SELECTION_DATA})
        annotator = picked.get("completed_by")
        if isinstance(annotator, dict):
            annotator = annotator.get("email") or annotator.get("id")
        if isinstance(annotator, str | int):
            row["annotator"] = annotator
        rows.append(row)
    if not rows:
        raise TaggerError(f"{path}: no task has a submitted annotation ({counts['unlabelled']} unlabelled)")
    return rows, counts


def labels_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
