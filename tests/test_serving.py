"""Promotion to the registry, tagging from the CLI, export, and a real HTTP server on loopback."""

import asyncio
import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from conftest import ADMIN, ADMIN_TOKEN, TRAIN_FILE, free_port, invoke, read_jsonl, run_main, wait_ready

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
        for m in sorted(mlflow.get_run(champion.run_id).data.metrics)
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


@pytest.mark.slow
def test_export_is_self_contained(registry, tmp_path):
    out = tmp_path / "exported"
    invoke("export", "--task", "topic", "--alias", "champion", "--out", str(out))
    assert (out / "MLmodel").exists()
    script = (
        "import mlflow, pandas as pd, sys\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "print(m.predict(pd.DataFrame({'text': ['Gas flows resumed.']})).iloc[0]['topics'])\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///" + str(tmp_path / "elsewhere.db")}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
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
@pytest.mark.slow
def test_bad_input_is_refused_and_server_keeps_serving(server, kwargs, status, message):
    r = httpx.post(f"{server}/v1/tag", **kwargs)
    assert r.status_code == status, r.text
    assert message in r.text
    assert httpx.post(f"{server}/v1/tag", json={"text": "Gas flows resumed."}).status_code == 200


@pytest.mark.slow
def test_reload_swaps_models(server):
    r = httpx.post(f"{server}/v1/admin/reload", json={}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "reloaded"


SLOW = pytest.mark.slow  # a real tagger serve process


@pytest.mark.parametrize(
    ("store", "args", "message"),
    [
        ("empty", [], "run 'tagger promote --task topic' first"),
        ("empty", ["--topic-model", "runs:/0123456789abcdef0123456789abcdef/model"], "cannot load"),
        ("empty", ["--topic-model", "{tmp_path}"], "not an MLflow model folder (no MLmodel file)"),
        ("empty", ["--stance-model", "nonsense"], "not a run id, models:/ or runs:/ URI, or a model folder"),
        pytest.param(
            "http://127.0.0.1:{port}", [], "tracking store http://127.0.0.1:{port} cannot be reached", marks=SLOW
        ),
        pytest.param(
            "postgresql://tagger:secret@127.0.0.1:{port}/mlflow",
            [],
            "postgresql://tagger:***@127.0.0.1:{port}/mlflow",
            marks=SLOW,
        ),
    ],
)
def test_serve_start_up_errors_are_one_clear_line(tmp_path, monkeypatch, capsys, store, args, message):
    """No champion, a missing or broken model URI, an unreachable store: exit 2 with the reason, no traceback.

    The model errors run in-process (a start-up each costs seconds); the store errors in a real ``tagger serve``."""
    port = free_port()  # nothing listens there
    store_uri = f"sqlite:///{tmp_path / 'empty.db'}" if store == "empty" else store.format(port=port)
    args = ["serve", "--port", str(free_port()), *[a.format(tmp_path=tmp_path) for a in args]]
    if store == "empty":
        monkeypatch.setenv("TAGGER_HOME", str(tmp_path))
        code, lines = run_main(monkeypatch, capsys, *args, store=store_uri)
        stderr = "\n".join(lines)
    else:
        env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "TAGGER_HOME": str(tmp_path)}
        proc = subprocess.run(
            [sys.executable, "-m", "train.cli", *args], env=env, capture_output=True, text=True, timeout=120
        )
        code, stderr = proc.returncode, proc.stderr
    assert code == 2, stderr
    assert message.format(port=port) in stderr
    assert "Traceback" not in stderr and "secret" not in stderr


@pytest.mark.slow
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


# --- limits of the service: starvation, deadlines, connections, admin, model faults -------------------------


@contextlib.contextmanager
def serving(log_folder: Path, *args: str, env: dict | None = None):
    """``tagger serve`` with ``args`` on a free loopback port (admin token set); yields its base URL."""
    port = free_port()
    log_path = log_folder / f"serve-{port}.log"
    with open(log_path, "w+b") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "train.cli", "serve", "--port", str(port), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TAGGER_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            if not wait_ready(base):
                pytest.fail(log_path.read_text())
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=30)


LIMITS = {"header": 1.0, "keep_alive": 2.0, "connections": 150, "deadline": 3.0}
ALLOWED_ORIGIN = "https://ops.example:8443"


@pytest.fixture(scope="module")
def limited_server(registry, tmp_path_factory):
    """A server with small limits, so that tests reach them quickly."""
    options = {
        "--max-sentences": 100,
        "--request-timeout": LIMITS["deadline"],
        "--header-timeout": LIMITS["header"],
        "--keep-alive-timeout": LIMITS["keep_alive"],
        "--max-connections": LIMITS["connections"],
        "--admin-origin": ALLOWED_ORIGIN,
    }
    with serving(tmp_path_factory.mktemp("limited"), *(str(x) for pair in options.items() for x in pair)) as base:
        yield base


def prose(chars: int) -> str:
    """News text of about ``chars`` characters, five sentences a line."""
    texts = [row["text"] for row in read_jsonl(TRAIN_FILE)]
    lines = [" ".join(texts[i : i + 5]) for i in range(0, len(texts), 5)]
    return "\n".join(lines)[:chars]


@pytest.mark.slow
def test_health_checks_and_small_requests_stay_fast_under_big_texts(limited_server):
    """40 texts of 100 KB at once took every thread of the pool that /healthz also needed (sentence
    splitting ran there), and long ``sentences`` bodies were tagged ahead of one-sentence requests."""
    big_text = {"text": prose(100_000)}
    long_sentences = {"sentences": [("Gas exports resumed after talks in Ankara. " * 21)[:900]] * 100}

    async def run():
        limits = httpx.Limits(max_connections=100, keepalive_expiry=0.5)
        async with (
            httpx.AsyncClient(base_url=limited_server, timeout=30, limits=limits) as load,
            httpx.AsyncClient(base_url=limited_server, timeout=30, limits=limits) as probe,
        ):
            bodies = [big_text] * 40 + [long_sentences] * 16
            flood = [asyncio.create_task(load.post("/v1/tag", json=body)) for body in bodies]
            await asyncio.sleep(0.3)  # the flood is on its way
            health, small = [], []
            while not all(task.done() for task in flood):
                began = time.monotonic()
                assert (await probe.get("/healthz")).status_code == 200
                health.append(time.monotonic() - began)
                began = time.monotonic()
                response = await probe.post("/v1/tag", json={"text": "Troops crossed the border."})
                small.append((time.monotonic() - began, response.status_code))
                await asyncio.sleep(0.05)
            return health, small, [task.result() for task in flood]

    health, small, flood = asyncio.run(run())
    assert max(health) < 1.0, sorted(health)[-5:]
    assert len(health) >= 5
    assert {status for _, status in small} == {200}
    assert max(latency for latency, _ in small) < 2.0, sorted(small)[-5:]
    statuses = {r.status_code for r in flood}
    assert statuses <= {200, 413, 503} and 413 in statuses, [r.text[:100] for r in flood]


@pytest.mark.slow
def test_a_request_that_would_wait_past_its_deadline_is_refused_at_once(limited_server):
    """Requests queued behind more work than their deadline allows got their 503 only once the deadline
    had passed, after taking their share of the work; now they are refused on arrival, with Retry-After."""
    body = json.dumps({"text": "word " * 180_000}).encode()  # one 900 KB line: about 1 s to split

    async def run():
        async with httpx.AsyncClient(base_url=limited_server, timeout=30) as client:

            async def post():
                began = time.monotonic()
                response = await client.post("/v1/tag", content=body, headers={"content-type": "application/json"})
                return time.monotonic() - began, response

            return await asyncio.gather(*(post() for _ in range(10)))

    results = asyncio.run(run())
    busy = [(took, r) for took, r in results if r.status_code == 503 and "server busy" in r.text]
    assert busy, [(took, r.status_code, r.text[:80]) for took, r in results]
    assert max(took for took, _ in busy) < LIMITS["deadline"] / 2
    assert all(int(r.headers["retry-after"]) >= 1 for _, r in busy)
    assert max(took for took, _ in results) < LIMITS["deadline"] + 2
    assert {r.status_code for _, r in results} <= {413, 503}


@pytest.mark.slow
def test_idle_slow_header_and_kept_alive_connections_are_closed(limited_server):
    """Connections that sent nothing, or trickled their headers, stayed open for good (uvicorn arms no
    timer before a first response); a kept-alive one stayed 75 s. Normal requests keep being answered."""
    host, port = limited_server.removeprefix("http://").split(":")
    address = (host, int(port))
    idle = [socket.create_connection(address) for _ in range(60)]
    slow = [socket.create_connection(address) for _ in range(60)]
    for conn in slow:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    huge = socket.create_connection(address)
    huge.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n")
    whole = socket.create_connection(address)  # oversize headers that arrive complete in one read
    whole.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 100_000 + b"\r\n\r\n")
    kept = socket.create_connection(address)
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    began = time.monotonic()
    selector = selectors.DefaultSelector()
    replies: dict[socket.socket, bytes] = {}
    closed_at: dict[socket.socket, float] = {}
    for conn in [*idle, *slow, huge, whole, kept]:
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ)
        replies[conn] = b""
    normal = []
    with httpx.Client(base_url=limited_server, timeout=5) as client:
        while len(closed_at) < len(replies) and time.monotonic() - began < 8:
            for key, _ in selector.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionResetError:
                    data = b""
                replies[key.fileobj] += data
                if not data:
                    closed_at[key.fileobj] = time.monotonic() - began
                    selector.unregister(key.fileobj)
            for conn in slow:
                if conn not in closed_at:
                    with contextlib.suppress(OSError):
                        conn.sendall(b"X")  # a byte at a time: the header never ends
            request_began = time.monotonic()
            normal.append((client.get("/healthz").status_code, time.monotonic() - request_began))
    for conn in replies:
        conn.close()
    header, keep_alive = LIMITS["header"], LIMITS["keep_alive"]
    assert len(closed_at) == len(replies), f"{len(replies) - len(closed_at)} connections still open"
    assert all(header - 0.1 <= closed_at[c] <= header + 1.5 and replies[c] == b"" for c in idle)
    assert all(header - 0.1 <= closed_at[c] <= header + 1.5 for c in slow)
    assert all(replies[c].startswith(b"HTTP/1.1 408 ") for c in slow)
    assert replies[huge].startswith(b"HTTP/1.1 431 ") and replies[whole].startswith(b"HTTP/1.1 431 ")
    assert replies[kept].startswith(b"HTTP/1.1 200 ") and keep_alive - 0.1 <= closed_at[kept] <= keep_alive + 1.5
    assert {status for status, _ in normal} == {200} and max(took for _, took in normal) < 1.0


@pytest.mark.slow
def test_connections_over_the_limit_are_answered_503(limited_server):
    host, port = limited_server.removeprefix("http://").split(":")
    time.sleep(0.3)  # connections of earlier tests are gone
    conns = [socket.create_connection((host, int(port))) for _ in range(LIMITS["connections"] + 10)]
    try:
        time.sleep(0.5)
        ready = selectors.DefaultSelector()
        for conn in conns:
            ready.register(conn, selectors.EVENT_READ)
        refused = [key.fileobj.recv(200) for key, _ in ready.select(timeout=0)]
        assert len(refused) == 10 and all(r.startswith(b"HTTP/1.1 503 ") for r in refused)
    finally:
        for conn in conns:
            conn.close()
    time.sleep(0.3)
    assert httpx.get(f"{limited_server}/healthz").status_code == 200


@pytest.mark.parametrize(
    ("origin", "kwargs", "status"),
    [
        (ALLOWED_ORIGIN, {"json": {}}, 200),
        (None, {"json": {}}, 200),  # curl, scripts: the token is enough
        ("https://ops.example", {"json": {}}, 403),  # another port
        ("http://ops.example:8443", {"json": {}}, 403),  # another scheme
        ("https://OPS.example:8443/", {"json": {}}, 403),  # not an origin (a path)
        ("null", {"json": {}}, 403),
        ("{server}", {"json": {}}, 403),  # equal to Host: what a DNS-rebinding page sends
        (None, {"content": b"{}", "headers": {"content-type": "text/plain"}}, 415),
        (None, {"content": b"reload please", "headers": {"content-type": "application/json"}}, 422),
        (None, {"content": b"[]", "headers": {"content-type": "application/json"}}, 422),
        (None, {"content": b"", "headers": {"content-type": "application/json"}}, 422),
        (None, {"content": b"[" * 100_000 + b"]" * 100_000, "headers": {"content-type": "application/json"}}, 422),
    ],
)
@pytest.mark.slow
def test_admin_origin_is_compared_in_full_with_an_allow_list(limited_server, origin, kwargs, status):
    headers = {**ADMIN, **kwargs.pop("headers", {})}
    if origin is not None:
        headers["Origin"] = origin.format(server=limited_server)
    r = httpx.post(f"{limited_server}/v1/admin/reload", headers=headers, timeout=60, **kwargs)
    assert r.status_code == status, r.text


@pytest.mark.slow
def test_admin_origin_option_must_be_an_origin(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'x.db'}", "TAGGER_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "train.cli", "serve", "--port", str(free_port()), "--admin-origin", "ftp://ops"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --admin-origin 'ftp://ops': not a web origin; give scheme://host[:port]"
    ]


EXPLODING_PLUGIN = """
from train.models.base import as_frame
from train.models.tfidf import TfidfLogReg


class ExplodingTfidf(TfidfLogReg):
    def predict_proba(self, X):
        texts = " ".join(as_frame(X)["text"])
        if "RAISE-SYSTEMEXIT" in texts:
            raise SystemExit(3)
        if "RAISE-KEYBOARDINTERRUPT" in texts:
            raise KeyboardInterrupt
        return super().predict_proba(X)
"""


@pytest.fixture(scope="module")
def exploding_server(registry, tmp_path_factory):
    """A server whose topic model raises ``SystemExit`` / ``KeyboardInterrupt`` on marked texts, as third-party
    model code may: a plug-in family (installed through the ``tagger_model_families`` entry point) that the
    exported champion's manifest names."""
    root = tmp_path_factory.mktemp("exploding")
    plugin = root / "plugin"
    (plugin / "exploding_family-0.1.dist-info").mkdir(parents=True)
    (plugin / "exploding_family.py").write_text(EXPLODING_PLUGIN, encoding="utf-8")
    (plugin / "exploding_family-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: exploding-family\nVersion: 0.1\n", encoding="utf-8"
    )
    (plugin / "exploding_family-0.1.dist-info" / "entry_points.txt").write_text(
        "[tagger_model_families]\nexploding_tfidf = exploding_family:ExplodingTfidf\n", encoding="utf-8"
    )
    folder = root / "topic"
    invoke("export", "--task", "topic", "--alias", "champion", "--out", str(folder))
    (manifest,) = folder.glob("artifacts/**/family.json")
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "family": "exploding_tfidf"}))
    env = {"PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])}
    with serving(root, "--topic-model", str(folder), env=env) as base:
        yield base


@pytest.mark.slow
def test_a_model_raising_systemexit_fails_one_request_only(exploding_server):
    """``SystemExit`` raised in a model's predict went through the inference task and stopped the event
    loop: the server exited. Now that request gets a 500 with a one-line reason, and the rest are served."""

    async def run():
        async with httpx.AsyncClient(base_url=exploding_server, timeout=30) as client:
            texts = [f"Gas deal number {i} was signed." for i in range(12)]
            texts[3], texts[8] = "RAISE-SYSTEMEXIT in a sentence.", "RAISE-KEYBOARDINTERRUPT in a sentence."
            return await asyncio.gather(*(client.post("/v1/tag", json={"text": t}) for t in texts))

    for _ in range(2):  # in one batch with others, then again: the server is still there
        responses = asyncio.run(run())
        assert [r.status_code for r in responses] == [200] * 3 + [500] + [200] * 4 + [500] + [200] * 3
        assert responses[3].json() == {"detail": "tagging failed: SystemExit: 3"}
        assert responses[8].json() == {"detail": "tagging failed: KeyboardInterrupt"}
    alone = httpx.post(f"{exploding_server}/v1/tag", json={"sentences": ["RAISE-SYSTEMEXIT"]}, timeout=30)
    assert alone.status_code == 500
    assert httpx.get(f"{exploding_server}/healthz").status_code == 200
