"""MkDocs hook: benchmark tables generated from ``bench/*.json`` at build time, never copied by hand.

``<!-- bench: NAME -->`` in a page becomes the table of ``bench/NAME.json``: a renderer of its own
where the bench has one (the learning curves), else the JSON's ``goals`` (goal, measured, met). A
bench whose JSON is not committed gets a note saying how to produce it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
MARKER = re.compile(r"<!-- bench: ([a-z0-9_]+) -->")
COMMANDS = {  # how each result file is made (the Makefile's `bench` target runs them all)
    "results": "bench/throughput.py --output bench/results.json",
    "int8": "bench/int8.py --output bench/int8.json",
    "selection": "bench/selection.py --output bench/selection.json",
    "learning_curve": "bench/learning_curve.py --jobs 2 --output bench/learning_curve.json",
    "tracking": "bench/tracking.py --output bench/tracking.json",
    "batch": "bench/batch.py --output bench/batch.json",
    "batch_static": "bench/batch.py --family static_logreg --engines local --output bench/batch_static.json",
    "serving": "bench/serving.py --output bench/serving.json",
    "reliability": "bench/reliability.py --output bench/reliability.json",
    "explain": "bench/explain.py",
    "speed": "bench/speed.py --output bench/speed.json",
}


def _labels(value: float | None) -> str:
    return "not reached" if value is None else f"{value:,.0f}"


def learning_curve(results: dict) -> str:
    """Mean over folds, then mean ± std over seeds, per task, strategy and label budget; the goal check."""
    lines = []
    for task, curves in results["curves"].items():
        sizes = [point["size"] for point in next(iter(curves.values()))]
        goal = results["goals"].get(task, {})
        best = {size: max(c[i]["f1_macro"] for c in curves.values()) for i, size in enumerate(sizes)}
        lines.append(f"**{task}**, macro F1 after each label budget:\n")
        head = " | ".join(f"{s:,}" for s in sizes)
        reach = f"labels to reach random's {sizes[-1]:,} (goal ≤ {goal.get('goal_labels', 0):,})"
        lines.append(f"| strategy | {head} | {reach} |")
        lines.append("|---" * (len(sizes) + 2) + "|")
        for strategy, curve in curves.items():
            cells = []
            for size, point in zip(sizes, curve, strict=True):
                text = f"{point['f1_macro']:.3f} ± {point['f1_macro_std']:.3f}"
                cells.append(f"**{text}**" if point["f1_macro"] == best[size] else text)
            needed = goal.get(f"{strategy}_labels_to_reach")
            met = goal.get(f"{strategy}_met")
            verdict = "" if strategy == "random" else f"{_labels(needed)}: {'met' if met else 'missed'}"
            per_seed = goal.get(f"{strategy}_labels_to_reach_per_seed")
            if per_seed and strategy != "random":
                values = [v for v in per_seed.values() if v is not None]
                if values:
                    verdict += f" (seeds {min(values):,.0f}–{max(values):,.0f})"
            lines.append(f"| {strategy} | {' | '.join(cells)} | {verdict} |")
        lines.append("")
    machine = results.get("machine", {})
    lines.append(
        f"Measured on {machine.get('cpus', '?')} CPUs with `--jobs {machine.get('jobs', '?')}` "
        f"in {results.get('seconds', 0) / 60:.0f} minutes ({results.get('units_done', '?')} runs)."
    )
    return "\n".join(lines)


def goals(results: dict) -> str:
    """A bench's own goal check: one row per goal (with a "before" column where the goals record one)."""
    before = any("before" in goal for goal in results["goals"].values())
    rows = ["| goal |" + (" before |" if before else "") + " target | measured | met |"]
    rows.append("|---" * (5 if before else 4) + "|")
    for name, goal in results["goals"].items():
        met = "yes" if goal.get("met") else "**no**"
        earlier = f" {goal.get('before', '')} |" if before else ""
        rows.append(
            f"| {name.replace('_', ' ')} |{earlier} {goal.get('goal', '')} | {goal.get('measured', '')} | {met} |"
        )
    return "\n".join(rows)


EXPLAINED = {  # bench/explain.json's sections: (what they explain, which p99 goal applies)
    "tfidf_logreg": ("TF-IDF logistic regression, topic + stance", "tfidf"),
    "tfidf_svm": ("TF-IDF SVM, topic + stance", "tfidf"),
    "transformer_onnx": ("MiniLM fine-tune, topic + stance, ONNX", "transformer"),
    "transformer_torch": ("MiniLM fine-tune, topic + stance, torch", "transformer"),
}


def explain(results: dict) -> str:
    """Added latency of an explanation per family, with the machine's load while it was measured."""

    def pair(figures: dict | None) -> str:
        return f"{figures['p50_ms']:,.1f} / {figures['p99_ms']:,.1f} ms" if figures else ""

    rows = [
        "| models | method | load (1 min) | explanation p50 / p99 | CPU time p50 / p99 | tagging alone p50 / p99 "
        "| truncated | goal (p99) | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, (name, goal_key) in EXPLAINED.items():
        part = results.get(key)
        if not part:
            continue
        goal = results["goals_p99_ms"][goal_key]
        truncated = f"{part['explanations_truncated']} of {part['sentences']}"
        rows.append(
            f"| {name} | {part['method']} | {part['load_average_1m_before']:.1f} | {pair(part['explain_added'])} "
            f"| {pair(part.get('explain_added_cpu'))} | {pair(part['tag'])} | {truncated} | < {goal:,.0f} ms "
            f"| {'yes' if part['meets_goal'] else '**no**'} |"
        )
    return "\n".join(rows)


def int8(results: dict) -> str:
    """Each transformer backend and int8 variant: speed against the pipeline and ONNX fp32, parity with torch."""
    if "backends" not in results:
        return f"No transformer measured: {results.get('skipped', 'no run')}."
    rows = [
        "| backend / variant | batch | sentences/s | × pipeline | × onnx fp32 | agreement | max / mean score diff "
        "| holds 99% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["backends"]:
        if "refused" in row:
            rows.append(f"| {row['backend']} | | refused: {row['refused'][:120]} | | | | | |")
            continue
        rows.append(
            f"| {row['backend']} | {row['batch_size']} | {row['sentences_per_second']:,.0f} "
            f"| {row.get('vs_pipeline', 0):.2f} | {row.get('vs_onnx_fp32', 0):.2f} | {row['agreement']:.1%} "
            f"| {row['max_abs_diff']:.3f} / {row['mean_abs_diff']:.4f} | {'yes' if row['agreement'] >= 0.99 else 'no'} "
            "|"
        )
    best = results.get("best_int8_holding_parity")
    peaks = results.get("peak_gflops", {})
    rows += [
        "",
        f"`transformers.pipeline` (batch 64): {results.get('transformers_pipeline_sentences_per_second', 0):,.0f} "
        f"sentences/s; {results.get('sentences', '?')} sentences, {results.get('mean_tokens', '?')} tokens on average, "
        f"{results.get('threads', '?')} threads. Peaks: fp32 sgemm {peaks.get('fp32_numpy_sgemm', '?')} GFLOP/s, "
        f"int8 u8×s8 {peaks.get('int8_ort_u8s8', '?')}, u8×u8 {peaks.get('int8_ort_u8u8', '?')} GOP/s. "
        + (
            f"Fastest int8 variant holding 99%: {best['backend']} ({best['vs_pipeline']:.2f}× the pipeline)."
            if best
            else "No int8 variant holds 99% agreement."
        ),
    ]
    return "\n".join(rows)


def batch(results: dict) -> str:
    """bench/batch.py: each engine's throughput on the generated input."""
    rows = ["| engine | sentences/s | tagging s | process s | peak RSS MB |", "|---|---|---|---|---|"]
    for engine in ("local", "spark"):
        if engine in results:
            run = results[engine]
            rows.append(
                f"| `{run['command']}` | {run['sentences_per_second']:,} | {run['tagging_seconds']} "
                f"| {run['process_seconds']} | {run['peak_rss_mb']} |"
            )
    source = results.get("input", {})
    rows.append("")
    rows.append(f"{source.get('sentences', 0):,} sentences ({source.get('format', '?')}), {source.get('models', '')}.")
    return "\n".join(rows)


RENDERERS = {
    "learning_curve": learning_curve,
    "explain": explain,
    "int8": int8,
    "batch": batch,
    "batch_static": batch,
}


def table(name: str) -> str:
    """The generated table of ``bench/NAME.json``, or a note saying how to produce it."""
    path = BENCH / f"{name}.json"
    if not path.is_file():
        command = COMMANDS.get(name, f"bench/{name}.py --output bench/{name}.json")
        return (
            f'!!! note "No results in this checkout"\n    `bench/{name}.json` is not committed yet: run '
            f"`.venv/bin/python {command}` and commit the file to see its table here."
        )
    results = json.loads(path.read_text(encoding="utf-8"))
    if name in RENDERERS:
        return RENDERERS[name](results)
    if "goals" in results:
        return goals(results)
    raise ValueError(f"bench/{name}.json: no renderer and no 'goals' (add one to docs/hooks/bench_tables.py)")


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(lambda m: table(m.group(1)), markdown)
