"""The Label Studio round trip through a real Label Studio server and its HTTP API.

``tagger select --format label-studio --label-config`` → a project with that config → the tasks imported with
their pre-annotations → annotations posted as an annotator's would be → the JSON export → ``tagger import-labels``.
Label Studio runs from its own virtualenv (``make labelstudio``; it pins pyarrow<25, ``.venv`` has 25) on a free
loopback port with a temporary data folder; skipped where that virtualenv is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port, invoke, read_jsonl, run_main, write_jsonl

LS_VENV = ROOT / ".venv-labelstudio"
LS_BIN = LS_VENV / "bin" / "label-studio"
TEMPLATE_DB = LS_VENV / "template" / "label_studio.sqlite3"  # schema migrated once by `make labelstudio`
TOKEN = "tagger-test-token-0123456789abcdef"
COMBINED = "models:/tagger@champion"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.services,
    pytest.mark.skipif(
        not LS_BIN.exists(), reason=f"Label Studio is not installed in {LS_VENV.name} (run `make labelstudio`)"
    ),
]


def _log_tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-4000:]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """A Label Studio server on a free loopback port: an admin user with a legacy API token, no browser,
    no update check or analytics, nothing written outside its temporary folder."""
    data = tmp_path_factory.mktemp("label-studio")
    if TEMPLATE_DB.exists():  # else Label Studio migrates an empty database itself (about 2 minutes here)
        shutil.copy(TEMPLATE_DB, data / TEMPLATE_DB.name)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(data),  # Label Studio also reads plain HOST, PORT, DEBUG, ...: a clean environment
        "PYTHONUNBUFFERED": "1",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
    }
    command = [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
    command += ["--username", "annotator@example.com", "--password", "not-a-real-password-1"]
    command += ["--user-token", TOKEN, "--enable-legacy-api-token", "--log-level", "WARNING"]
    log = data / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=data)
    try:
        # Label Studio moves to another port when the one asked for is taken: read the one it serves on
        deadline, base = time.monotonic() + 300, None
        while time.monotonic() < deadline and proc.poll() is None:
            served = re.search(r"Starting development server at (http://127\.0\.0\.1:\d+)/", _log_tail(log))
            if served:
                base = served.group(1)
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        else:
            pytest.fail(f"Label Studio did not answer (exit status {proc.poll()}):\n{_log_tail(log)}")
        client = httpx.Client(base_url=base, headers={"Authorization": f"Token {TOKEN}"}, timeout=60)
        yield client
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ok(response: httpx.Response, status: int) -> dict | list:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text[:2000]}"
    return response.json() if response.content else {}


def choices(control: str, values: list[str]) -> dict:
    return {"from_name": control, "to_name": "text", "type": "choices", "value": {"choices": values}}


def test_select_annotate_export_and_import_labels_through_label_studio(
    label_studio, registry, tmp_path, monkeypatch, capsys
):
    from train.domain import STANCE_LABELS, TOPIC_LABELS

    api = label_studio
    user = ok(api.get("/api/current-user/whoami"), 200)
    assert user["email"] == "annotator@example.com"
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")[1::3][:300]  # sentences the models did not see
    pool = write_jsonl(tmp_path / "pool.jsonl", [{k: r[k] for k in ("id", "doc_id", "text", "target")} for r in rows])
    tasks_file, config_file = tmp_path / "round-1.json", tmp_path / "labeling.xml"
    args = ["--n", "6", "--strategy", "uncertainty", "--format", "label-studio"]
    invoke("select", COMBINED, "--pool", str(pool), *args, "--out", str(tasks_file), "--label-config", str(config_file))
    tasks, config = json.loads(tasks_file.read_text(encoding="utf-8")), config_file.read_text(encoding="utf-8")

    # Label Studio checks configs (a control naming no object is refused) and accepts ours as written
    broken = config.replace('toName="text"', 'toName="body"', 1)
    assert ok(api.post("/api/projects/validate", json={"label_config": broken}), 400)
    ok(api.post("/api/projects/validate", json={"label_config": config}), 204)
    project = ok(api.post("/api/projects", json={"title": "tagger round 1", "label_config": config}), 201)
    assert project["label_config"] == config.strip()  # stored as written, less the final newline
    parsed = project["parsed_label_config"]
    assert parsed["topics"]["type"] == parsed["stance"]["type"] == "Choices"
    assert parsed["topics"]["labels"] == TOPIC_LABELS and parsed["stance"]["labels"] == STANCE_LABELS
    assert parsed["topics"]["to_name"] == parsed["stance"]["to_name"] == ["text"]

    imported = ok(api.post(f"/api/projects/{project['id']}/import", json=tasks), 201)
    assert imported["task_count"] == imported["prediction_count"] == 6
    listed = ok(api.get("/api/tasks", params={"project": project["id"], "page_size": 100}), 200)["tasks"]
    ids = {t["data"]["id"]: t["id"] for t in listed}  # our sentence id → Label Studio's task id
    assert sorted(ids) == sorted(t["data"]["id"] for t in tasks)
    for task in tasks:  # each pre-annotation is on its task as written: what the annotator starts from
        (prediction,) = ok(api.get(f"/api/tasks/{ids[task['data']['id']]}"), 200)["predictions"]
        (sent,) = task["predictions"]
        assert prediction["result"] == sent["result"] and prediction["model_version"] == sent["model_version"]
        assert prediction["score"] == pytest.approx(sent["score"])

    # an annotator accepts the first suggestion, corrects the second, labels the third with a stance only,
    # skips the fourth and leaves two
    first, second, third, fourth = (ids[t["data"]["id"]] for t in tasks[:4])
    (accepted,) = ok(api.get(f"/api/tasks/{first}"), 200)["predictions"]
    annotations = {
        first: {"result": accepted["result"], "parent_prediction": accepted["id"]},
        second: {"result": [choices("topics", ["trade", "energy"]), choices("stance", ["against"])]},
        third: {"result": [choices("stance", ["neutral"])]},
        fourth: {"result": [], "was_cancelled": True},
    }
    for task_id, annotation in annotations.items():
        ok(api.post(f"/api/tasks/{task_id}/annotations", json=annotation), 201)

    export = tmp_path / "project-export.json"
    response = api.get(f"/api/projects/{project['id']}/export", params={"exportType": "JSON"})
    export.write_bytes(response.content)
    # by default (as in the Export dialog) Label Studio exports the tasks with annotations, the skipped one too
    assert response.status_code == 200 and len(json.loads(response.content)) == 4
    out = tmp_path / "real-round-1.jsonl"
    invoke("import-labels", str(export), "--out", str(out))
    labelled = {r["id"]: r for r in read_jsonl(out)}
    suggested = {i["from_name"]: i["value"]["choices"] for i in tasks[0]["predictions"][0]["result"]}
    expected = {
        tasks[0]["data"]["id"]: ([t for t in TOPIC_LABELS if t in suggested.get("topics", [])], suggested["stance"][0]),
        tasks[1]["data"]["id"]: (["energy", "trade"], "against"),
        tasks[2]["data"]["id"]: ([], "neutral"),
    }
    assert {i: (r["topics"], r["stance"]) for i, r in labelled.items()} == expected
    source = {r["id"]: r for r in rows}
    for sentence_id, row in labelled.items():
        assert {k: row[k] for k in ("text", "doc_id", "target")} == {
            k: source[sentence_id][k] for k in ("text", "doc_id", "target")
        }
        assert row["annotator"] == user["id"]  # Label Studio exports the annotator as a user id
        assert not {"suggested", "rank", "uncertainty", "strategy"} & set(row)

    # Label Studio stores a label outside the config (the API does not check choices); import-labels refuses it
    fifth = ids[tasks[4]["data"]["id"]]
    ok(api.post(f"/api/tasks/{fifth}/annotations", json={"result": [choices("stance", ["hostile"])]}), 201)
    everything = {"exportType": "JSON", "download_all_tasks": "true"}  # the unlabelled sixth as well
    response = api.get(f"/api/projects/{project['id']}/export", params=everything)
    export.write_bytes(response.content)
    assert response.status_code == 200 and len(json.loads(response.content)) == 6
    number = 1 + [t["id"] for t in json.loads(response.content)].index(fifth)  # its place in the export
    begins = re.search(rf'{{\s*"id":\s*{fifth},\s*"annotations"', response.text).start()  # where it begins
    line = 1 + response.text.count("\n", 0, begins)
    store = os.environ["MLFLOW_TRACKING_URI"]
    code, lines = run_main(monkeypatch, capsys, "import-labels", str(export), "--out", str(out), store=store)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(
        f"error: {export} line {line} (task {number}, id {fifth}): stance label 'hostile' is not in the schema"
    )
