"""``tagger ui``: the MLflow UI on the store, with links that open each experiment on its ranked runs.

How MLflow 3.17's UI takes its state, read in its source (``mlflow/server/js/src``) and checked against
the 3.17.2 bundle:

- ``#/experiments/<id>/runs`` is the *Training runs* tab (``experiment-tracking/routes.ts``,
  ``ExperimentPageTabName.Runs`` in ``experiment-tracking/constants.ts``).
- ``workflowType=machine_learning`` picks the model-training view. The UI reads the kind from this URL
  parameter, else from localStorage ``mlflow.workflowType``, default ``genai``
  (``common/contexts/WorkflowTypeContext.tsx``); with the workflow switch on (``common/utils/
  FeatureUtils.ts``, on in 3.17) ``experiment-tracking/utils/ExperimentKindUtils.ts`` derives the kind
  from it and ignores the experiment tag ``mlflow.experimentKind``: the tag alone opened the GenAI
  overview.
- ``viewStateShareKey=<key>`` loads the JSON in the experiment tag ``mlflow.sharedViewState.<key>``
  (``experiment-page/hooks/useSharedExperimentViewState.ts``, ``constants.ts``): the search facets
  ``searchFilter``, ``orderByKey``, ``orderByAsc`` (``hooks/useExperimentPageSearchFacets.tsx``) and the
  UI state ``selectedColumns``, ``runsHiddenMode``, ``chartsSearchFilter`` (``models/
  ExperimentPageUIState.tsx``; run pins, hidden and expanded runs are not shared). It is skipped when
  the URL has a search facet of its own, so the sort goes in the shared state, not the URL.
- Column and sort keys are ``metrics.`<name>``` and ``tags.`<name>```
  (``utils/experimentPage.common-utils.ts``, ``makeCanonicalSortKey``).
- ``compareRunsMode=CHART`` shows the charts of the visible runs (the first 10 in the table's order)
  beside the table (``hooks/useExperimentPageViewMode.ts``); ``chartsSearchFilter`` is a
  case-insensitive regular expression over the charts' metric names
  (``runs-charts/components/RunsChartsSectionAccordion.tsx``).
- ``#/compare-runs?runs=[...]&experiments=[...]`` is the side-by-side page (``routes.ts``,
  ``getCompareRunPageRoute``); it takes nothing else from the URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import quote

import mlflow

from train.errors import TaggerError
from train.tracking import store

log = logging.getLogger("tagger")

SHARE_TAG_PREFIX, SHARE_PARAM = "mlflow.sharedViewState.", "viewStateShareKey"
ML_VIEW = "workflowType=machine_learning"
NOT_EVALUATION_SETS = {"dev", "cv", "validation", "parity", "train", "running"}


@dataclass
class View:
    """The runs of one kind of validation score in one experiment: like is ranked with like."""

    key: str  # share key, e.g. tagger.cv
    title: str
    search: str  # MLflow search filter
    sort: str  # the validation metric, best first
    headline: list[str]  # candidate columns, in order; those no run has are dropped
    columns: list[str] = field(default_factory=list)
    top: list[str] = field(default_factory=list)  # run ids, best first
    count: int = 0


def kinds() -> list[View]:
    """Cross-validated runs by their CV mean; single-split runs by their dev score (never mixed)."""
    finished = "attributes.status = 'FINISHED'"
    cv = [f"cv/{m}_{s}" for m in ("f1_macro", "f1_micro", "accuracy", "f_avg", "hamming_loss") for s in ("mean", "std")]
    dev = ["dev/f1_macro", "dev/f1_macro_ci_low", "dev/f1_macro_ci_high", "dev/f1_micro", "dev/accuracy"]
    return [
        View("tagger.cv", "cross-validated runs", f"tags.`tagger.cv` = 'parent' and {finished}", cv[0], cv),
        View("tagger.dev", "single-split runs", f"metrics.`dev/f1_macro` >= 0 and {finished}", dev[0], dev),
    ]


def evaluation_sets(metric_names: set[str]) -> list[str]:
    """The evaluation sets the runs were scored on (``seeds``, ...), from their ``<set>/f1_macro``."""
    sets = {name.split("/")[0] for name in metric_names if name.endswith("/f1_macro") and name.count("/") == 1}
    return sorted(s for s in sets if s not in NOT_EVALUATION_SETS and not s.startswith("dev_"))


def plan_views(client: mlflow.MlflowClient, experiment_id: str, top: int) -> list[View]:
    """The experiment's views that have runs: their columns (headline metrics the runs have) and top runs."""
    views = []
    for view in kinds():
        runs = client.search_runs(
            [experiment_id], view.search, order_by=[f"metrics.`{view.sort}` DESC"], max_results=1000
        )
        if not runs:
            continue
        names = {name for run in runs for name in run.data.metrics}
        interval = ("f1_macro", "f1_macro_ci_low", "f1_macro_ci_high")
        extra = [f"{s}/{m}" for s in evaluation_sets(names) for m in interval]
        extra += ["dev/f_avg", "dev/hamming_loss"] if view.key == "tagger.dev" else []
        extra += ["train_seconds", "model_size_mb"]
        view.columns = [name for name in dict.fromkeys([*view.headline, *extra]) if name in names]
        view.top, view.count = [run.info.run_id for run in runs[:top]], len(runs)
        views.append(view)
    return views


def shared_state(view: View, charts: bool) -> dict:
    """The view state the UI loads from the experiment tag (see the module's notes)."""
    state = {
        "searchFilter": view.search,
        "orderByKey": f"metrics.`{view.sort}`",
        "orderByAsc": False,
        "selectedColumns": ["tags.`model_family`", *[f"metrics.`{name}`" for name in view.columns]],
        "columnWidths": {f"metrics.`{name}`": 130 for name in view.columns},
        "runsHiddenMode": "FIRST_10_RUNS",
    }
    if charts:  # one chart per headline metric, of the top runs
        state["chartsSearchFilter"] = "^(" + "|".join(re.escape(name) for name in view.columns) + ")$"
        state["hideEmptyCharts"] = True
    return state


def share(client: mlflow.MlflowClient, experiment_id: str, view: View) -> None:
    """Store the view's runs table and charts states as experiment tags, for ``viewStateShareKey``."""
    for key, charts in ((view.key, False), (f"{view.key}.charts", True)):
        client.set_experiment_tag(experiment_id, SHARE_TAG_PREFIX + key, json.dumps(shared_state(view, charts)))


def links(base: str, experiment_id: str, view: View) -> dict[str, str]:
    """The runs table, its charts and the side-by-side page of the top runs."""
    page = f"{base}/#/experiments/{experiment_id}/runs?{ML_VIEW}&{SHARE_PARAM}="
    runs, experiments = (quote(json.dumps(ids, separators=(",", ":"))) for ids in (view.top, [experiment_id]))
    found = {"runs": page + view.key, "charts": page + f"{view.key}.charts&compareRunsMode=CHART"}
    if len(view.top) > 1:
        found["compare"] = f"{base}/#/compare-runs?runs={runs}&experiments={experiments}&{ML_VIEW}"
    return found


def describe(base: str, top: int) -> list[str]:
    """Share the views of every ``tagger-*`` experiment and return the lines that link to them."""
    client = mlflow.MlflowClient()
    lines = []
    for experiment in client.search_experiments(filter_string="name LIKE 'tagger-%'", order_by=["name ASC"]):
        for view in plan_views(client, experiment.experiment_id, top):
            share(client, experiment.experiment_id, view)
            found = links(base, experiment.experiment_id, view)
            lines += [
                f"{experiment.name}: {view.count} {view.title}, best first by {view.sort}",
                f"  runs:    {found['runs']}",
                f"  charts:  {found['charts']}",
            ]
            if "compare" in found:
                lines.append(f"  compare: {found['compare']}  (top {len(view.top)} side by side)")
    return lines or [f"no finished runs yet in {base}: train a config (tagger train CONFIG), then run tagger ui again"]


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise TaggerError(
                f"port {port} on {host} is in use (another MLflow UI?); pass --port, or UI_PORT=... for make ui"
            ) from None


def wait_until_up(url: str, process: subprocess.Popen, log_path: str, timeout: float = 180) -> None:
    """Return once ``url``/health answers; a clear error when the server exits or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path, encoding="utf-8", errors="replace") as server_log:
                tail = server_log.read().strip().splitlines()[-1:] or ["no output"]
            raise TaggerError(f"mlflow ui exited with status {process.returncode}: {tail[0]} (log: {log_path})")
        try:
            urllib.request.urlopen(url + "/health", timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    stop(process)
    raise TaggerError(f"mlflow ui did not answer at {url} within {timeout:.0f}s (log: {log_path})")


def stop(process: subprocess.Popen) -> None:
    """End the server and its workers (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start(uri: str, host: str, port: int) -> tuple[subprocess.Popen, str]:
    """``mlflow ui`` on the store at ``uri``, answering at http://host:port; its output goes to a log file."""
    check_port_free(host, port)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if store.sqlite_path(uri) is not None:
        command += ["--default-artifact-root", str(store.home() / "mlartifacts")]
    log_file = tempfile.NamedTemporaryFile(prefix="tagger-ui-", suffix=".log", delete=False)  # noqa: SIM115
    with log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return process, log_file.name


def ui(host: str, port: int, top: int, echo) -> None:
    """Start the MLflow UI on the configured store (or use the tracking server) and ``echo`` the links.

    With an ``http(s)`` tracking URI nothing is started: the server already serves its UI.
    """
    uri = store.tracking_uri()
    remote = uri.split("://")[0] in ("http", "https")
    store.setup(uri)
    if remote:
        for line in describe(uri.rstrip("/"), top):
            echo(line)
        return
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # kill: stop the server too (finally below)
    process, log_path = start(uri, host, port)
    try:
        log.info("starting mlflow ui on %s (log: %s)", store.redact(uri), log_path)
        wait_until_up(base, process, log_path)
        echo(f"MLflow UI at {base} on {store.redact(uri)}; Ctrl-C stops it")
        for line in describe(base, top):
            echo(line)
        sys.stdout.flush()
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(process)
