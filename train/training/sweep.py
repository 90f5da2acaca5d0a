"""``tagger sweep``: an Optuna study over a config's search space, every trial a cross-validation.

Steps: check the config, the space and the objective, and load and fold the data (every user error
surfaces here, before a study or run exists); open or resume the study in Optuna's RDB storage
(SQLite beside ``mlflow.db`` by default, any RDB URL such as PostgreSQL for several machines); open
the sweep's parent run (through the ``Recorder``); run ``jobs`` worker processes (each gets the
resolved config as plain values, never the file again); then log the best value, the best
params, ``trials.csv`` and Optuna's plots on the parent and write ``best.yaml``.

A trial is exactly the cross-validation ``tagger cv`` runs (same folds, decisions tuned on the other
folds), so ``tagger cv best.yaml`` reproduces the best value. After each fold it reports its running
value, and the median pruner stops trials that fall behind. Trials never load the evaluation sets.

Studies are shared: ``--trials N`` is the size of the study, and every worker (of this command or
another ``tagger sweep`` on the same study and storage, on any machine) runs trials until N count
(complete, pruned or running). A trial numbered after N counting ones gives its slot up (it is marked
FAIL with the user attr ``tagger.surplus``), so no two workers fill the same slot; the trials of a
worker that died are failed (at once on this host, after the heartbeat grace period elsewhere) and
their slots run again.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState

from train.config import PROJECT_ROOT, Config, apply_overrides, dump_config, name_problem
from train.errors import TaggerError
from train.evaluation.metrics import logged_summary
from train.inputs import check_writable_folder
from train.registry import build_model
from train.tracking import store
from train.tracking.recorder import FAILED, FINISHED, Recorder, Run
from train.training.cv import FoldPlan, fit_fold, plan_folds, score_folds, summarize
from train.training.pipeline import (
    check_trainable,
    config_params,
    default_recorder,
    prepare,
    run_tags,
    seed_everything,
    step,
)
from train.training.space import (
    Space,
    check_space,
    config_values,
    config_with,
    load_space,
    resolve_objective,
    trial_overrides,
)

log = logging.getLogger("tagger")

SWEEP_ROLE_TAG = "tagger.sweep"  # "parent" on the sweep's run, "trial" on each nested trial run
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
HEARTBEAT_SECONDS, GRACE_SECONDS = 10, 60
ERROR_ATTR = "tagger.error"  # a failed trial's cause (one line), for the sweep's final message
BASELINE_ATTR = "tagger.baseline"  # on the trial that runs the config's own values (trial 0 of a new study)
PROGRESS_SECONDS = 10  # a trial running longer says how far it got at most this often
MAX_FAILURES_IN_A_ROW = 3  # a worker stops when its trials keep failing (a broken setting, not bad luck)


@dataclass(frozen=True)
class SweepOptions:
    """How to sweep: the space file, the study's size and where it lives, and where best.yaml goes."""

    space: str | Path  # the search space (YAML)
    trials: int  # the size of the study (a resumed study grows to it)
    jobs: int = 1  # worker processes
    storage: str | None = None  # Optuna RDB URL (default: optuna.db beside the MLflow store)
    study: str | None = None  # the study's name; the same name resumes it (default: <task>-<config stem>)
    objective: str | None = None  # the CV metric to optimise (default: the space's, else cv/f1_macro_mean)
    out: str | Path | None = None  # folder for best.yaml (default: sweeps/<study>)
    overrides: tuple[str, ...] = ()  # the --set values the config was loaded with, repeated in best.yaml


@dataclass(frozen=True)
class SweepSpec:
    """What every worker needs; plain values (and a picklable recorder), so it crosses to spawned processes."""

    config: dict  # the resolved config as plain values (``config_values``): workers never read the file
    config_path: str | None  # the file it came from (best.yaml extends it), if any
    overrides: tuple[str, ...]
    space_path: str
    trials: int
    storage: str
    study: str
    objective: str
    direction: str
    folds: int
    repeats: int
    recorder: Recorder
    parent_run_id: str


@dataclass
class SweepResult:
    parent_run_id: str
    study: str
    storage: str
    counts: dict[str, int]
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_trial: int | None = None
    best_config: Path | None = None
    baseline_value: float | None = None  # the CV score of the config's own values (the unswept config)
    baseline_trial: int | None = None
    baseline_note: str = ""  # why there is no baseline score, when there is none

    def describe(self) -> str:
        lines = [
            f"study '{self.study}' in {store.redact(self.storage)}: "
            + ", ".join(f"{n} {state}" for state, n in self.counts.items() if n),
            f"sweep run: {self.parent_run_id}",
        ]
        if self.baseline_value is not None:
            lines.append(f"baseline: trial {self.baseline_trial}, {self.baseline_value:.4f} (the config's own values)")
        elif self.baseline_note:
            lines.append(f"baseline: {self.baseline_note}")
        if self.best_trial is not None:
            gain = ""
            if self.baseline_value is not None:
                gain = f", {self.best_value - self.baseline_value:+.4f} over the baseline"
            lines.append(
                f"best: trial {self.best_trial}, {self.best_value:.4f}{gain} ({shown_params(self.best_params)})"
            )
            lines.append(f"best config: {self.best_config}  (tagger train {self.best_config})")
        return "\n".join(lines)


def rounded(value: Any) -> Any:
    """A parameter value for people: floats to 4 significant digits (0.5431616693375222 -> 0.5432)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    return value


def shown_params(values: dict[str, Any]) -> str:
    """``C=0.5432, word_ngram_range=[1, 2]``: a trial's values, rounded, keys without ``model.params.``."""
    return ", ".join(f"{key.removeprefix('model.params.')}={json.dumps(rounded(v))}" for key, v in values.items())


def baseline_values(space: Space, config: Config) -> tuple[dict[str, Any] | None, str]:
    """The config's own value of each swept key, as Optuna stores it (categorical choices as JSON text),
    or None and why, when a value lies outside the space (then no trial can run it)."""
    from train.training.space import Categorical, IntRange

    values, params = config_values(config), {}
    for key, dist in space.params.items():
        value: Any = values
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(dist, Categorical):
            if value not in dist.choices:
                return None, f"the config's {key}={json.dumps(value)} is not among the space's choices"
            params[key] = json.dumps(value)
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not dist.low <= value <= dist.high:
            return None, f"the config's {key}={json.dumps(value)} lies outside the space ({dist.low}..{dist.high})"
        if isinstance(dist, IntRange) and (value - dist.low) % dist.step:
            return None, f"the config's {key}={value} is off the space's step ({dist.step})"
        params[key] = value
    return params, ""


def enqueue_baseline(study: optuna.Study, space: Space, config: Config) -> None:
    """Make trial 0 of a new study the config's own values, so the sweep reports what it gained over them."""
    params, why = baseline_values(space, config)
    if params is None:
        study.set_user_attr(BASELINE_ATTR, why)
        log.info("baseline: %s; run 'tagger cv' on the config for its score", why)
        return
    study.enqueue_trial(params, user_attrs={BASELINE_ATTR: True})


def default_storage() -> str:
    """Optuna's storage beside the embedded MLflow store: ``optuna.db`` in the project folder."""
    return f"sqlite:///{store.home() / 'optuna.db'}"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats; its schema is created by one process at a time."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {}
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    deadline = time.monotonic() + SCHEMA_RACE_SECONDS
    while True:
        try:
            with storage_lock(url, "schema"):
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS
                )
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy and drivers raise many types for a bad URL
            # another client (an Optuna script, a dashboard) creating the schema at this moment: try again
            if _schema_race(exc) and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise TaggerError(
                f"optuna storage {store.redact(url)} cannot be opened ({type(exc).__name__}: {exc})"
            ) from None


SCHEMA_RACE_SECONDS = 30


def _schema_race(exc: BaseException) -> bool:
    """An error of two clients creating Optuna's tables at once (a unique row or a table made twice)."""
    text = str(exc).lower()
    return any(sign in text for sign in ("unique constraint", "already exists", "duplicate key", "database is locked"))


storage_lock = store.storage_lock  # moved to train.tracking.store (promote shares it); this name stays importable


def sweep(
    config: Config, recorder: Recorder | None = None, *, config_path: str | Path | None = None, options: SweepOptions
) -> SweepResult:
    """Run (or resume) a sweep of ``config`` until the study has ``options.trials`` trials; return its best.

    ``recorder``: where the runs go (default: MLflow, from the config); ``config_path``: the file the
    config came from (the default study name, and ``extends:`` in best.yaml).
    """
    recorder = default_recorder(config, recorder)
    space_path = options.space
    space = load_space(space_path)
    check_space(space, config, space_path)
    objective, direction = resolve_objective(config, space, options.objective)
    stem = Path(config_path).stem if config_path else config.model.family
    study_name = check_study_name(f"{config.task.name}-{stem}" if options.study is None else options.study)
    storage_url = options.storage or default_storage()
    check_storage(storage_url)
    out = Path(options.out) if options.out else sweep_folder(study_name)
    check_writable_folder(str(out), "--out")
    seed_everything(config.seed)
    with step("loading and checking data"):
        prepared = prepare(config)
        plan_folds(config, prepared.data, prepared.model, config.split.folds, config.split.repeats)

    with storage_lock(storage_url, "study"):  # sweeps starting one study at once share it and one parent run
        study = _open_study(storage_url, study_name, space, objective, direction, config.task.name)
        if not study.trials:  # a new study: trial 0 runs the config's own values (the baseline)
            enqueue_baseline(study, space, config)
        recorder.open()
        parent = _parent_run(recorder, study, config, config_path, prepared, space_path, objective, direction)
    spec = SweepSpec(
        config_values(config),
        str(Path(config_path).resolve()) if config_path else None,
        tuple(options.overrides),
        str(Path(space_path).resolve()),
        options.trials,
        storage_url,
        study_name,
        objective,
        direction,
        config.split.folds,
        config.split.repeats,
        recorder,
        parent.id,
    )
    log.info(
        "sweep '%s': %d trials of %d-fold CV, %s %s, %d worker(s); storage %s; %s run %s",
        study_name,
        options.trials,
        spec.folds,
        direction,
        objective,
        options.jobs,
        store.redact(storage_url),
        recorder.name,
        parent.id,
    )
    try:
        _run_workers(spec, options.jobs)
        with storage_lock(storage_url, "finish"):  # sweeps of one study finishing at once update one parent run
            return finish(spec, space, out, parent)
    finally:
        if parent.workdir is not None:
            shutil.rmtree(parent.workdir, ignore_errors=True)


def check_study_name(name: str) -> str:
    """A study name is also a folder name (``sweeps/<study>``): letters, digits, '.', '-' and '_' only."""
    problem = name_problem(name)
    if problem:
        raise TaggerError(f"--study {name!r}: {problem}")
    return name


def sweep_folder(study: str) -> Path:
    """``sweeps/<study>`` beside the store, checked to stay inside ``sweeps/``."""
    root = (store.home() / "sweeps").resolve()
    folder = (root / study).resolve()
    if not folder.is_relative_to(root) or folder == root:
        raise TaggerError(f"--study {study!r}: the sweep folder would be outside {root}")
    return folder


def check_storage(url: str) -> None:
    """Fail before any work, naming ``--storage``, when the Optuna storage URL is malformed or unreachable."""
    import sqlalchemy

    shown = store.redact(url)
    try:
        sqlalchemy.engine.make_url(url)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises ArgumentError and ValueError
        raise TaggerError(f"--storage {shown}: not a database URL (e.g. sqlite:///optuna.db, postgresql://…)") from None
    path = store.sqlite_path(url)
    if path is not None:
        check_writable_folder(str(path.parent), f"--storage {shown}: folder")
        return
    try:
        store.try_connect(url)
    except Exception as exc:  # noqa: BLE001 - drivers raise many types for a server that does not answer
        reason = " ".join(str(exc).split())[:200]
        raise TaggerError(
            f"--storage {shown}: the Optuna storage cannot be reached ({type(exc).__name__}: {reason})"
        ) from None


def _open_study(url: str, name: str, space: Space, objective: str, direction: str, task: str) -> optuna.Study:
    """Create the study, or resume it when its space, objective and task are the same (else an error)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    attrs = {"tagger.space": space.fingerprint(), "tagger.objective": objective, "tagger.task": task}
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        return study
    for key, value in attrs.items():
        if study.user_attrs.get(key) not in (None, value):
            what = key.removeprefix("tagger.")
            raise TaggerError(
                f"study '{name}' in {store.redact(url)} was run with another {what}; "
                "give a new --study name (or the same space, objective and task to resume it)"
            )
    if study.direction.name.lower() != direction:
        raise TaggerError(f"study '{name}' {study.direction.name.lower()}s; this sweep would {direction}")
    return study


def _parent_run(
    recorder: Recorder, study: optuna.Study, config, config_path, prepared, space_path, objective, direction
) -> Run:
    """The study's parent run: resumed when the study is resumed, else started (with config and space).

    It outlives this process's part of the sweep (workers of other sweeps log trials under it), so it
    is ended by ``finish``, not by a ``with`` block.
    """
    run_id = study.user_attrs.get("mlflow_run_id")  # read from the storage: another process may have set it
    if run_id:
        run = recorder.resume(run_id)
        if run is not None:
            return run
        # the study outlived its runs (another tracking store): start a new parent
    tags = {
        **run_tags(config, config_path, prepared),
        SWEEP_ROLE_TAG: "parent",
        "optuna.study": study.study_name,
    }
    run = recorder.start(f"sweep {study.study_name}", tags)
    params = config_params(config)
    params.update({"sweep.objective": objective, "sweep.direction": direction, "sweep.space": str(space_path)})
    run.log_params(params)
    (run.workdir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    shutil.copyfile(space_path, run.workdir / "space.yaml")
    run.log_artifact(run.workdir / "config.yaml")
    run.log_artifact(run.workdir / "space.yaml")
    study.set_user_attr("mlflow_run_id", run.id)
    return run


# --- workers ----------------------------------------------------------------------------------------


def _run_workers(spec: SweepSpec, jobs: int) -> None:
    """One worker in this process, or ``jobs`` spawned worker processes (they exit if this process dies)."""
    if jobs == 1:
        run_worker(spec, 0)
        return
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_spawned_worker, args=(spec, i, os.getpid())) for i in range(jobs)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
    failed = [i for i, w in enumerate(workers) if w.exitcode not in (0, None)]
    if failed:
        log.warning("worker(s) %s exited with an error; finished trials are kept", ", ".join(map(str, failed)))


def _spawned_worker(spec: SweepSpec, index: int, parent_pid: int) -> None:
    from train.runtime import quiet_libraries

    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)-7s [worker {index}] %(message)s", datefmt="%H:%M:%S"
    )
    quiet_libraries()

    def watch() -> None:  # a worker whose sweep process was killed must not run on alone
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    run_worker(spec, index)


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials of this host whose process is gone (other hosts': by heartbeat, later)."""
    import socket

    failed = []
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get(store.HOST_TAG) != host or store.process_alive(
            attrs.get(store.PID_TAG), attrs.get(store.STARTED_TAG)
        ):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        failed.append(trial.number)
        log.warning(
            "trial %d was left RUNNING by process %s, which is gone: failed", trial.number, attrs[store.PID_TAG]
        )
    return failed


def run_worker(spec: SweepSpec, index: int) -> None:
    """Run trials of the study until it holds ``spec.trials`` counting trials."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is our one warning line, not a traceback
    config = config_with(spec.config, [])
    spec.recorder.open()
    storage = open_storage(spec.storage)
    study = optuna.load_study(study_name=spec.study, storage=storage)
    fail_dead_trials(study)
    study.sampler = optuna.samplers.TPESampler(seed=config.seed + index + len(study.trials), constant_liar=True)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    objective = TrialObjective(spec, load_space(spec.space_path))
    failures = 0
    while len(study.get_trials(deepcopy=False, states=COUNTED)) < spec.trials:
        objective.surplus = objective.failed = False
        study.optimize(objective, n_trials=1, catch=(Exception,))
        if objective.surplus:
            break
        failures = failures + 1 if objective.failed else 0
        if failures >= MAX_FAILURES_IN_A_ROW:
            log.error("%d trials in a row failed; this worker stops (see the errors above)", failures)
            break


class Surplus(Exception):
    """The study already has its trials: this trial gives its slot up."""


class TrialObjective:
    """One trial: the config with the trial's values, cross-validated in a run nested under the sweep's."""

    def __init__(self, spec: SweepSpec, space: Space):
        self.spec = spec
        self.space = space
        self.plans: dict[str, FoldPlan] = {}  # folds per data config, made once per worker
        self.surplus = self.failed = False

    def __call__(self, trial: optuna.Trial) -> float:
        spec = self.spec
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=COUNTED) if t.number < trial.number]
        if len(ahead) >= spec.trials:
            self.surplus = True
            trial.set_user_attr("tagger.surplus", True)
            raise Surplus(f"trial {trial.number}: the study already has {spec.trials} trials")
        for key, value in store.process_tags().items():
            trial.set_user_attr(key, value)
        values: dict[str, Any] = {}
        try:
            values = self.space.suggest(trial)  # inside: a value Optuna cannot draw is a failed trial too
            return self._cross_validate(trial, values)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            self.failed = True
            cause = " ".join(str(exc).split())[:500] or type(exc).__name__
            trial.set_user_attr(ERROR_ATTR, cause)
            log.warning("%s failed (%s): %s", self._label(trial), shown_params(values), cause)
            raise

    def _label(self, trial: optuna.Trial) -> str:
        """``trial 7 [8/20]``: Optuna's number (as in the run names), and how far the study is."""
        done = len(trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        baseline = ", baseline: the config's own values" if trial.user_attrs.get(BASELINE_ATTR) else ""
        return f"trial {trial.number} [{min(done + 1, self.spec.trials)}/{self.spec.trials}{baseline}]"

    def _best_so_far(self, trial: optuna.Trial, value: float | None) -> str:
        """``best so far 0.8010 (trial 0)``, counting this trial's ``value``."""
        best: tuple[float, int] | None = None if value is None else (value, trial.number)
        better = max if self.spec.direction == "maximize" else min
        for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if other.value is not None and (best is None or better(other.value, best[0]) != best[0]):
                best = (other.value, other.number)
        return "no trial complete yet" if best is None else f"best so far {best[0]:.4f} (trial {best[1]})"

    def _plan(self, config) -> FoldPlan:
        """The data and folds of ``config`` (loaded and made once per worker), checked against its model."""
        key = json.dumps([config.data, config.task, config.split], default=lambda m: m.model_dump(mode="json"))
        if key not in self.plans:
            prepared = prepare(config)
            self.plans[key] = plan_folds(
                config, prepared.data, prepared.model, config.split.folds, config.split.repeats
            )
        plan = self.plans[key]
        model = build_model(config.model.family, config.task.type, config.task.labels, config.model.params, config.seed)
        check_trainable(config, plan.data, model)  # this trial's params against the data
        return plan

    def _cross_validate(self, trial: optuna.Trial, values: dict[str, Any]) -> float:
        spec = self.spec
        source = f"trial {trial.number} ({json.dumps(values)})"
        config = config_with(spec.config, [*trial_overrides(values), "evaluation.sets=[]"], source)
        plan = self._plan(config)
        tags = {
            SWEEP_ROLE_TAG: "trial",
            "optuna.study": spec.study,
            "optuna.trial": str(trial.number),
            "task": config.task.name,
            "model_family": config.model.family,
        }
        folds = [(r, k) for r in range(plan.repeats) for k in range(plan.folds)]
        oof = np.zeros((plan.repeats, len(plan.data), len(config.task.labels)))
        pruned = False
        label = self._label(trial)
        log.info("%s: %s", label, shown_params(values))
        started = said = time.monotonic()
        with spec.recorder.run(f"trial {trial.number}", tags, parent=spec.parent_run_id) as run:
            run.log_params(config_params(config))
            for index, (r, k) in enumerate(folds):
                oof[r, plan.held_out(r, k)], _ = fit_fold(config, plan, r, k)
                summary = summarize(score_folds(config, plan, oof, folds[: index + 1]))  # all folds: the CV
                running = summary[spec.objective]
                run.log_metrics({f"running/{spec.objective.removeprefix('cv/')}": running}, step=index)
                trial.report(running, index)
                if time.monotonic() - said >= PROGRESS_SECONDS and index < len(folds) - 1:  # a slow trial says so
                    said = time.monotonic()
                    log.info(
                        "%s: fold %d/%d, running %.4f (%.0f s)", label, index + 1, len(folds), running, said - started
                    )
                if index < len(folds) - 1 and trial.should_prune():
                    pruned = True
                    break
            run.set_tags({"optuna.state": "PRUNED" if pruned else "COMPLETE"})
            if not pruned:
                run.log_metrics(logged_summary(summary))  # the headline cv/ means and stds
        seconds = time.monotonic() - started
        if pruned:
            log.info(
                "%s: pruned after fold %d/%d at %.4f in %.0f s; %s",
                label,
                index + 1,
                len(folds),
                running,
                seconds,
                self._best_so_far(trial, None),
            )
            raise optuna.TrialPruned()
        value = summary[spec.objective]
        log.info("%s: %s %.4f in %.0f s; %s", label, spec.objective, value, seconds, self._best_so_far(trial, value))
        return value


# --- the end of a sweep -----------------------------------------------------------------------------


def finish(spec: SweepSpec, space: Space, out: str | Path | None = None, run: Run | None = None) -> SweepResult:
    """Log the study's state on the parent run (best value and params, counts, trials.csv, plots); write best.yaml.

    ``run``: this process's handle on the parent run (from ``_parent_run``); else it is looked up by id.
    """
    study = optuna.load_study(study_name=spec.study, storage=open_storage(spec.storage))
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    result = SweepResult(spec.parent_run_id, spec.study, spec.storage, counts)
    run = run or spec.recorder.attach(spec.parent_run_id)
    if run is None:
        raise TaggerError(f"sweep '{spec.study}': its run {spec.parent_run_id} is gone from the tracking store")
    metrics = {f"trials_{state}": float(n) for state, n in counts.items()}
    workdir = run.workdir or Path(tempfile.mkdtemp(prefix="tagger-run-"))
    try:
        if not counts["complete"] and not counts["pruned"]:
            errors = [t.user_attrs[ERROR_ATTR] for t in trials if ERROR_ATTR in t.user_attrs]
            if errors:
                run.set_note(f"every trial failed; the first: {errors[0]}")
                run.end(FAILED)
                raise TaggerError(f"sweep '{spec.study}': all {len(errors)} trials failed; the first: {errors[0]}")
        baseline = [t for t in trials if t.user_attrs.get(BASELINE_ATTR) is True]
        if baseline and baseline[0].state == TrialState.COMPLETE:
            result.baseline_trial, result.baseline_value = baseline[0].number, float(baseline[0].value)
            metrics["baseline_value"] = result.baseline_value
        elif baseline:
            result.baseline_note = f"trial {baseline[0].number} (the config's own values) is {baseline[0].state.name}"
        else:
            result.baseline_note = str(study.user_attrs.get(BASELINE_ATTR) or "not in this study (an older sweep)")
        if counts["complete"]:
            best = study.best_trial
            result.best_trial, result.best_value = best.number, float(best.value)
            result.best_params = {key: json.loads(_as_json(best.params[key], space, key)) for key in space.params}
            metrics["best_value"] = result.best_value
            run.set_tags({"best.trial": str(best.number)})
            run.set_tags({f"best.{key}": json.dumps(value) for key, value in result.best_params.items()})
            folder = Path(out) if out else sweep_folder(spec.study)
            result.best_config = write_best_config(spec, result, folder)
            shutil.copyfile(result.best_config, workdir / "best.yaml")
            run.log_artifact(workdir / "best.yaml")
            _plots(study, workdir / "plots")
            if (workdir / "plots").exists():
                run.log_artifact(workdir / "plots", "plots")
        study.trials_dataframe().to_csv(workdir / "trials.csv", index=False)
        run.log_artifact(workdir / "trials.csv")
        run.log_metrics(metrics, step=counts["complete"])
        run.set_note("```\n" + result.describe() + "\n```")
        run.end(FINISHED)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _as_json(value: Any, space: Space, key: str) -> str:
    """A trial's stored value as JSON (categorical choices are stored as their JSON text)."""
    from train.training.space import Categorical

    return value if isinstance(space.params[key], Categorical) else json.dumps(value)


def write_best_config(spec: SweepSpec, result: SweepResult, folder: Path) -> Path:
    """``best.yaml``: ``extends:`` the swept config, plus the ``--set`` values and the best values
    (a sweep of a config that came from no file: the whole resolved config with the best values)."""
    folder.mkdir(parents=True, exist_ok=True)
    if spec.config_path is None:
        base = apply_overrides(spec.config, trial_overrides(result.best_params))
    else:
        config_path = Path(spec.config_path)
        inside = config_path.is_relative_to(PROJECT_ROOT) and folder.resolve().is_relative_to(PROJECT_ROOT)
        parent = os.path.relpath(config_path, folder.resolve()) if inside else str(config_path)
        base = {"extends": parent, **apply_overrides({}, [*spec.overrides, *trial_overrides(result.best_params)])}
    baseline = (
        f"# Baseline (the config's own values, trial {result.baseline_trial}): {result.baseline_value:.4f}\n"
        if result.baseline_value is not None
        else ""
    )
    header = (
        f"# Best of sweep '{spec.study}' (trial {result.best_trial}: {spec.objective} {result.best_value:.4f}),\n"
        f"# written by tagger sweep; {spec.recorder.name} run {spec.parent_run_id}. "
        "Reproduce with: tagger cv <this file>\n"
        f"{baseline}"
        f"# Best values, rounded: {shown_params(result.best_params)} (below: exact, as the trial ran them)\n"
    )
    path = folder / "best.yaml"
    text = header + yaml.safe_dump(base, sort_keys=False, allow_unicode=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)  # a reader never sees half a file
    return path


def _plots(study: optuna.Study, folder: Path) -> None:
    """Optuna's matplotlib plots (history, importances, parallel coordinates) as PNGs; skipped where too few trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, plot in (
            ("optimization_history", plots.plot_optimization_history),
            ("param_importances", plots.plot_param_importances),
            ("parallel_coordinate", plots.plot_parallel_coordinate),
        ):
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as exc:
                log.info("plot %s skipped: %s", name, exc)
                continue
            figure = np.atleast_1d(axes).ravel()[0].figure
            figure.set_size_inches(9, 5)
            figure.tight_layout()
            figure.savefig(folder / f"{name}.png", dpi=100)
            plt.close(figure)
