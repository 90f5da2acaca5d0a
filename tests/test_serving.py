"""Promotion to the registry, tagging from the CLI, export, and a real HTTP server on loopback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import pytest
from conftest import ADMIN, free_port, invoke

from train.domain import TOPIC_LABELS
from train.errors import TaggerError
from train.tracking.promote import choose, promote, rollback

ROOT = Path(__file__).resolve().parent.parent


def test_promote_picks_best_and_moves_aliases(registry):
    runs, output = registry
    client = mlflow.MlflowClient()
    scores = {
        family: mlflow.get_run(runs[("topic", family)]).data.metrics["dev/f1_macro"]  # validation, not the seeds
        for family in ("tfidf_logreg", "tfidf_svm")
    }
    best = max(scores, key=scores.get)
    champion = client.get_model_version_by_alias("tagger-topic", "champion")
    assert champion.run_id == runs[("topic", best)]
    assert "Runner-up" in champion.description and champion.tags["metric"] == "validation/f1_macro"
    assert "test: seeds/f1_macro" in champion.description and "significant" in champion.description
    assert "tagger-topic v1 is now @champion" in output
    choice_dry = invoke("promote", "--task", "topic", "--metric", "dev/f1_macro", "--dry-run").stdout
    assert "dry run: nothing registered" in choice_dry
    assert client.get_model_version_by_alias("tagger-topic", "champion").version == champion.version
    # a loss ranks lowest first
    losses = {f: mlflow.get_run(runs[("topic", f)]).data.metrics["seeds/hamming_loss"] for f in scores}
    assert choose("topic", "seeds/hamming_loss").winner["metrics.seeds/hamming_loss"] == min(losses.values())
    # promoting by a metric that prefers the other run moves champion there and previous to the old one
    other = next(
        m
        for m in (f"seeds/{k}_{label}" for k in ("recall", "precision", "f1") for label in TOPIC_LABELS)
        if choose("topic", m).winner["run_id"] != champion.run_id
    )
    _, version, changed = promote("topic", other)
    assert changed
    # promoting the same choice again registers nothing, for the task and for the combined model
    invoke("promote", "--task", "topic", "--metric", other)  # the combined model follows the new champion
    counts = {n: len(client.search_model_versions(f"name='{n}'")) for n in ("tagger-topic", "tagger")}
    again = invoke("promote", "--task", "topic", "--metric", other).stdout
    assert f"tagger-topic v{version} is already @champion" in again and "is already @champion" in again.splitlines()[-1]
    assert {n: len(client.search_model_versions(f"name='{n}'")) for n in counts} == counts
    assert client.get_model_version_by_alias("tagger-topic", "previous").version == champion.version
    assert client.get_model_version_by_alias("tagger-topic", "champion").version == version != champion.version
    # --rollback swaps them back (and the combined model follows); a dry run changes nothing
    assert "would be @champion" in invoke("promote", "--task", "topic", "--rollback", "--dry-run").stdout
    assert client.get_model_version_by_alias("tagger-topic", "champion").version == version
    assert f"v{champion.version} is now @champion" in invoke("promote", "--task", "topic", "--rollback").stdout
    assert client.get_model_version_by_alias("tagger-topic", "champion").version == champion.version
    assert client.get_model_version_by_alias("tagger-topic", "previous").version == version
    bundle = client.get_model_version_by_alias("tagger", "champion")
    assert bundle.description.startswith(f"topic v{champion.version} ")
    assert client.get_model_version_by_alias("tagger", "champion")  # the combined topic + stance model


def test_rollback_without_previous_is_clear():
    with pytest.raises(TaggerError, match="tagger-nothing has no 'previous' version"):
        rollback("nothing")


def test_promote_without_runs_is_clear():
    with pytest.raises(TaggerError, match="no experiment 'tagger-nothing'"):
        choose("nothing")


def test_tag_cli_uses_champions(registry):
    out = invoke("tag", "Iran and Iraq signed a gas deal. Militias attacked a base.", "--json").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["Iran and Iraq signed a gas deal.", "Militias attacked a base."]
    assert rows[1]["start"] == len("Iran and Iraq signed a gas deal. ")
    assert set(rows[0]["topic_scores"]) == {"security", "energy", "trade", "diplomacy"}
    assert rows[0]["stance"] in {"favor", "against", "neutral"}


def test_export_is_self_contained(registry, tmp_path):
    out = tmp_path / "exported"
    invoke("export", "--task", "topic", "--alias", "champion", "--out", str(out))
    assert (out / "MLmodel").exists()
    script = (
        "import mlflow, pandas as pd, sys\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "print(m.predict(pd.DataFrame({'text': ['Gas flows resumed.']})).iloc[0]['labels'])\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///" + str(tmp_path / "elsewhere.db")}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_tag_endpoint(server):
    r = httpx.post(
        f"{server}/v1/tag",
        json={
            "text": "Ankara and Baghdad signed an oil pipeline deal. Talks ended.",
            "target": "closer Turkey–Iraq ties",
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["target"] == "closer Turkey–Iraq ties"
    assert len(body["sentences"]) == 2 and body["sentences"][1]["start"] > 0
    assert "tagger-topic v" in body["models"]["topic"]
    r = httpx.post(f"{server}/v1/tag", json={"sentences": ["Troops crossed the border."]})
    assert r.status_code == 200 and r.json()["sentences"][0]["text"] == "Troops crossed the border."
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/v1/models").json()["topic_labels"] == ["security", "energy", "trade", "diplomacy"]
    assert "/v1/tag" in httpx.get(f"{server}/openapi.json").json()["paths"]
    assert "<textarea" in httpx.get(f"{server}/").text


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"json": {"text": ""}}, 422, "'text' is empty"),
        ({"json": {"text": "   \n "}}, 422, "'text' is empty"),
        ({"json": {"text": "Hi.", "target": ""}}, 422, "empty string"),
        ({"json": {"text": "Hi.", "colour": "red"}}, 422, "colour"),
        ({"json": {"text": 42}}, 422, "string"),
        ({"json": {}}, 422, "exactly one of"),
        ({"content": b"not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ({"content": b'{"text": "caf\xe9"}', "headers": {"content-type": "application/json"}}, 422, "not valid UTF-8"),
        ({"json": {"sentences": ["One."] * 51}}, 413, "at most 50"),
        ({"json": {"sentences": ["One."] * 10_000}}, 413, "10000 sentences; at most 50"),
        ({"json": {"text": "x" * 200_000}}, 413, "over 100000 bytes"),
        (
            {"content": b'{"text": "' + b"x" * 10_000_000 + b'"}', "headers": {"content-type": "application/json"}},
            413,
            "over 100000 bytes",
        ),
    ],
)
def test_bad_input_is_refused_and_server_keeps_serving(server, kwargs, status, message):
    r = httpx.post(f"{server}/v1/tag", **kwargs)
    assert r.status_code == status, r.text
    assert message in r.text
    assert httpx.post(f"{server}/v1/tag", json={"text": "Gas flows resumed."}).status_code == 200


def test_reload_swaps_models(server):
    r = httpx.post(f"{server}/v1/admin/reload", json={}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "reloaded"


@pytest.mark.parametrize(
    ("store", "args", "message"),
    [
        ("empty", [], "run 'tagger promote --task topic' first"),
        ("empty", ["--topic-model", "runs:/0123456789abcdef0123456789abcdef/model"], "cannot load"),
        ("empty", ["--topic-model", "{tmp_path}"], "not an MLflow model folder (no MLmodel file)"),
        ("empty", ["--stance-model", "nonsense"], "not a run id, models:/ or runs:/ URI, or a model folder"),
        ("http://127.0.0.1:{port}", [], "tracking store http://127.0.0.1:{port} cannot be reached"),
        ("postgresql://tagger:secret@127.0.0.1:{port}/mlflow", [], "postgresql://tagger:***@127.0.0.1:{port}/mlflow"),
    ],
)
def test_serve_start_up_errors_are_one_clear_line(tmp_path, store, args, message):
    """No champion, a missing or broken model URI, an unreachable store: exit 2 with the reason, no traceback."""
    port = free_port()  # nothing listens there
    store_uri = f"sqlite:///{tmp_path / 'empty.db'}" if store == "empty" else store.format(port=port)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "TAGGER_HOME": str(tmp_path)}
    args = [a.format(tmp_path=tmp_path) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "train.cli", "serve", "--port", str(free_port()), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert message.format(port=port) in proc.stderr
    assert "Traceback" not in proc.stderr and "secret" not in proc.stderr


def test_concurrent_requests_get_their_own_results(server):
    """Micro-batching coalesces concurrent requests; each must still get exactly its own sentences back."""
    import asyncio

    async def send_all():
        async with httpx.AsyncClient(timeout=60) as client:
            bodies = [
                {
                    "sentences": [f"Request {i} sentence {j} about gas exports." for j in range(i % 4 + 1)],
                    "target": f"closer A{i}–B{i} ties",
                }
                for i in range(24)
            ]
            responses = await asyncio.gather(*(client.post(f"{server}/v1/tag", json=b) for b in bodies))
            return bodies, responses

    bodies, responses = asyncio.run(send_all())
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200
        data = response.json()
        assert data["target"] == body["target"]
        assert [s["text"] for s in data["sentences"]] == body["sentences"]
        assert [s["index"] for s in data["sentences"]] == list(range(len(body["sentences"])))
