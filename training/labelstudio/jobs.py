"""Training jobs of the ML backend: pull, train and score in child processes, promote or keep.

A job runs two commands of this package in child processes (the serving process never trains,
so it keeps answering ``/predict``):

1. ``python -m training train CONFIG --set data.label_studio.project=P ...``: pulls a snapshot
   of the project, trains a candidate into ``<store>/jobs/<job>/``; ``train`` itself writes the
   model atomically, so a killed run leaves no model behind;
2. ``python -m training evaluate CANDIDATE SERVING --config CANDIDATE/training_config.yaml``:
   scores both models on the same held-out documents (the candidate's final-score split of the
   new snapshot) with bootstrap intervals and a paired bootstrap test of the difference.

The candidate is promoted when its strict micro F1 is not below the serving model's (minus
``margin``, 0 by default): it is moved into the store as a new version and the server swaps
it in. Anything else (a failed or killed child, a worse candidate, a cancel) leaves the
serving model and ``current`` untouched. Each job's state, progress and decision are kept in
``<store>/jobs/<job>/job.json``, beside the children's logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from training.config import API_KEY_ENV, load_config
from training.errors import ConfigError, TrainingError
from training.files import write_atomically
from training.labelstudio.predictions import model_version
from training.labelstudio.versions import VersionStore

# What Label Studio sends to an ML backend's /webhook for "Start Training" (and, with the
# project's "start training after N annotations" setting, every N-th annotation).
START_TRAINING = "START_TRAINING"
# Project webhook events that count towards ``train_every``.
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")
RUNNING_STATES = ("queued", "training", "evaluating", "promoting")
# transformers' Trainer prints each log entry as a dict with the epoch it reached.
EPOCH_IN_LOG = re.compile(r"""['"]epoch['"]\s*:\s*['"]?([0-9.]+)""")
LOG_TAIL_LINES = 12


@dataclass(frozen=True)
class TrainingSettings:
    """How the backend trains: the config, overrides, promotion rule and automatic trigger."""

    config: Path
    # ``--set`` overrides for every job (the job's own paths and project come after them).
    overrides: tuple[str, ...] = ()
    # Label Studio server and the variable holding its key (the children pull with them).
    url: str | None = None
    api_key_env: str = API_KEY_ENV
    # Promote when candidate F1 >= serving F1 - margin (strict micro F1, same documents).
    margin: float = 0.0
    bootstrap: int = 1000
    # Start a job after this many annotation events of a project (None: only on request) ...
    train_every: int | None = None
    # ... once no further event has come for this long (a burst of edits trains once).
    debounce_s: float = 30.0
    # The interpreter the children run (this one by default).
    python: str = sys.executable

    def job_overrides(self, project: int, job_dir: Path, snapshot_dir: Path) -> list[str]:
        """All ``--set`` overrides of a job's ``train`` run: the configured ones, then the job's."""
        own = [
            f"data.label_studio.project={project}",
            f"data.label_studio.api_key_env={self.api_key_env}",
            f"data.label_studio.snapshot_dir={snapshot_dir}",
            f"data.dataset_dir={job_dir / 'dataset'}",
            f"training.output_dir={job_dir / candidate_name(job_dir.name)}",
            "training.progress=false",
        ]
        if self.url:
            own.append(f"data.label_studio.url={self.url}")
        return [*self.overrides, *own]

    def check(self, store: VersionStore) -> None:
        """Fail before serving when a job could never run: a bad config or overrides."""
        if not self.config.is_file():
            raise ConfigError(f"--train-config {self.config}: no such file")
        job_dir = store.jobs_dir / "check"
        config = load_config(self.config, self.job_overrides(1, job_dir, store.root / "snapshots"))
        if config.data.label_studio is None:  # pragma: no cover - the overrides always set it
            raise ConfigError(f"{self.config}: training from Label Studio needs data.label_studio")


def candidate_name(job_id: str) -> str:
    """The directory a job trains into; ``model_version`` names the version after it."""
    return f"candidate-{job_id}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Job:
    """One training job, as ``/status`` and ``/jobs`` show it."""

    id: str
    project: int
    trigger: str
    state: str = "queued"
    created_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    # training: epochs reached of the configured ones; the step the job is in.
    epoch: float | None = None
    epochs: float | None = None
    pid: int | None = None
    message: str = ""
    serving_version: str | None = None
    candidate_version: str | None = None
    promoted: bool = False
    # Both models' strict micro F1 with 95% intervals, and the paired difference.
    comparison: dict | None = None

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    def to_dict(self) -> dict:
        return asdict(self)


class JobCancelled(TrainingError):
    """A job stopped by ``cancel`` (or by the server shutting down)."""


class JobManager:
    """Runs one training job at a time for the backend; promotes through ``promote``.

    ``promote(version)`` is called with a version already in the store: it loads it, makes it
    current and swaps it in (the server's business). ``serving()`` names the version serving now.
    """

    def __init__(
        self,
        store: VersionStore,
        settings: TrainingSettings,
        serving: Callable[[], str],
        promote: Callable[[str], None],
    ) -> None:
        self.store = store
        self.settings = settings
        self._serving = serving
        self._promote = promote
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._process: subprocess.Popen | None = None
        self._cancelled: set[str] = set()
        self._rerun: tuple[int, str] | None = None
        self._events: dict[int, int] = {}
        self._timers: dict[int, threading.Timer] = {}
        self._closed = False
        self._load_history()

    # --- requests -----------------------------------------------------------------------

    def start(self, project: int, trigger: str) -> tuple[Job, bool]:
        """Start a job for ``project``; while one runs, queue one more run after it instead.

        Returns the job that is (or will first be) running and whether a new one started.
        """
        with self._lock:
            if self._closed:
                raise TrainingError("the backend is shutting down: no new training job")
            running = self._running()
            if running is not None:
                self._rerun = (project, f"{trigger} (queued while {running.id} ran)")
                return running, False
            job = self._new_job(project, trigger)
        threading.Thread(target=self._run, args=(job,), name=f"job-{job.id}", daemon=True).start()
        return job, True

    def annotation_event(self, project: int, count: int = 1) -> dict:
        """Count annotation events of ``project``; ``train_every`` of them start a job after the debounce."""
        every = self.settings.train_every
        if every is None:
            return {"status": "ignored: the backend trains on request only (serve --train-every N)"}
        with self._lock:
            self._events[project] = self._events.get(project, 0) + count
            seen = self._events[project]
            if seen < every:
                return {"status": f"counted: {seen} of {every} annotation events before training"}
            timer = self._timers.pop(project, None)
            if timer is not None:
                timer.cancel()  # debounce: the quiet period starts again with every event
            timer = threading.Timer(self.settings.debounce_s, self._debounced, args=(project,))
            timer.daemon = True
            self._timers[project] = timer
            timer.start()
        quiet = f"{self.settings.debounce_s:g} s"
        return {"status": f"{seen} annotation events: training starts after {quiet} without another"}

    def _debounced(self, project: int) -> None:
        with self._lock:
            if self._timers.get(project) is not threading.current_thread():
                return
            del self._timers[project]
            seen = self._events.pop(project, 0)
        with contextlib.suppress(TrainingError):  # the server is shutting down
            self.start(project, f"{seen} annotation events")

    def cancel(self, job_id: str) -> Job:
        """Stop a running job (its child process is terminated); the serving model stays."""
        with self._lock:
            job = self._job(job_id)
            if not job.running:
                return job
            self._cancelled.add(job_id)
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
        return job

    def close(self) -> None:
        """Cancel timers and the running job (the server is stopping)."""
        with self._lock:
            self._closed = True
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            self._rerun = None
            running = self._running()
        if running is not None:
            self.cancel(running.id)
            deadline = time.monotonic() + 30
            while running.running and time.monotonic() < deadline:
                time.sleep(0.05)

    # --- views --------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job ``job_id`` (KeyError when unknown)."""
        with self._lock:
            return self._job(job_id)

    def jobs(self) -> list[Job]:
        """Every job this store has seen, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.id, reverse=True)

    def status(self) -> dict:
        """The running job (with its progress), the last finished one and the trigger's counters."""
        with self._lock:
            running = self._running()
            finished = [j for j in self._jobs.values() if not j.running]
            last = max(finished, key=lambda j: j.id) if finished else None
            return {
                "running": running.to_dict() if running else None,
                "last_finished": last.to_dict() if last else None,
                "queued_after_running": self._rerun is not None,
                "annotation_events": {str(p): n for p, n in self._events.items()},
                "train_every": self.settings.train_every,
            }

    # --- the job ------------------------------------------------------------------------

    def _running(self) -> Job | None:
        return next((j for j in self._jobs.values() if j.running), None)

    def _job(self, job_id: str) -> Job:
        if job_id not in self._jobs:
            raise KeyError(job_id)
        return self._jobs[job_id]

    def _new_job(self, project: int, trigger: str) -> Job:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        job_id, n = f"{stamp}-p{project}", 1
        while job_id in self._jobs or (self.store.jobs_dir / job_id).exists():
            n += 1
            job_id = f"{stamp}-p{project}-{n}"
        job = Job(job_id, project, trigger, serving_version=self._serving())
        self._jobs[job_id] = job
        (self.store.jobs_dir / job_id).mkdir(parents=True)
        self._save(job)
        return job

    def _load_history(self) -> None:
        """Jobs of earlier runs of the server; one that was running then is marked failed."""
        if not self.store.jobs_dir.is_dir():
            return
        for path in sorted(self.store.jobs_dir.glob("*/job.json")):
            try:
                job = Job(**json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                continue  # not a job record of this version: leave it alone
            if job.running:
                job.state, job.message = "failed", "the server stopped while the job ran"
                job.finished_at = job.finished_at or utc_now()
                self._save(job)
            self._jobs[job.id] = job

    def _save(self, job: Job) -> None:
        payload = json.dumps(job.to_dict(), indent=1) + "\n"
        write_atomically(
            self.store.jobs_dir / job.id / "job.json", lambda t: t.write_text(payload, encoding="utf-8")
        )

    def _update(self, job: Job, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)
            self._save(job)

    def _run(self, job: Job) -> None:
        job_dir = self.store.jobs_dir / job.id
        try:
            self._train(job, job_dir)
            comparison = self._evaluate(job, job_dir)
            self._decide(job, job_dir, comparison)
        except JobCancelled as exc:
            self._update(job, state="cancelled", message=str(exc), pid=None, finished_at=utc_now())
        except Exception as exc:  # a job never takes the server down: it fails with the reason
            self._update(job, state="failed", message=str(exc), pid=None, finished_at=utc_now())
        rerun = None
        with self._lock:
            if self._rerun is not None and not self._closed:
                rerun, self._rerun = self._rerun, None
        if rerun is not None:
            self.start(*rerun)

    def _train(self, job: Job, job_dir: Path) -> None:
        overrides = self.settings.job_overrides(job.project, job_dir, self.store.root / "snapshots")
        config = load_config(self.settings.config, overrides)
        self._update(job, state="training", epoch=0.0, epochs=config.training.epochs)
        command = [self.settings.python, "-m", "training", "train", str(self.settings.config)]
        command += [f"--set={override}" for override in overrides]

        def progress(line: str) -> None:
            found = EPOCH_IN_LOG.search(line)
            if found:
                self._update(job, epoch=min(float(found.group(1)), config.training.epochs))

        self._child(job, command, job_dir / "train.log", progress)

    def _evaluate(self, job: Job, job_dir: Path) -> dict:
        candidate = job_dir / candidate_name(job.id)
        serving = self.store.path(job.serving_version)
        self._update(job, state="evaluating", candidate_version=model_version(candidate))
        metrics = json.loads((candidate / "metrics.json").read_text(encoding="utf-8"))
        split = metrics.get("splits_used", {}).get("final_scores", "test")
        out = job_dir / "comparison.json"
        command = [
            self.settings.python, "-m", "training", "evaluate", str(candidate), str(serving),
            "--config", str(candidate / "training_config.yaml"), "--split", split,
            "--bootstrap", str(self.settings.bootstrap), "--json", str(out),
        ]  # fmt: skip
        self._child(job, command, job_dir / "evaluate.log")
        return summarize_comparison(json.loads(out.read_text(encoding="utf-8")), candidate, serving, split)

    def _decide(self, job: Job, job_dir: Path, comparison: dict) -> None:
        promote = should_promote(comparison, self.settings.margin)
        comparison["rule"] = f"promote when candidate F1 - serving F1 >= -{self.settings.margin:g}"
        if not promote:
            self._update(
                job, state="kept", comparison=comparison, finished_at=utc_now(),
                message=f"candidate not promoted: {describe(comparison)}",
            )  # fmt: skip
            return
        self._update(job, state="promoting", comparison=comparison)
        self._check_cancelled(job)
        version = self.store.add(job_dir / candidate_name(job.id), job.candidate_version, move=True)
        self._promote(version)
        self._update(
            job, state="promoted", promoted=True, finished_at=utc_now(),
            message=f"{version} serves now: {describe(comparison)}",
        )  # fmt: skip

    def _check_cancelled(self, job: Job) -> None:
        with self._lock:
            if job.id in self._cancelled:
                raise JobCancelled("cancelled")

    def _child(
        self, job: Job, command: list[str], log: Path, on_line: Callable[[str], None] | None = None
    ) -> None:
        """Run one child process, its output into ``log``; an error with the log's tail if it fails."""
        self._check_cancelled(job)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("w", encoding="utf-8") as handle:
            handle.write("$ " + " ".join(command) + "\n")
            handle.flush()
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
            )
            with self._lock:
                self._process = process
                if job.id in self._cancelled:  # cancelled while the child was starting
                    process.terminate()
            self._update(job, pid=process.pid)
            for line in process.stdout:
                handle.write(line)
                handle.flush()
                if on_line is not None:
                    on_line(line)
            code = process.wait()
        with self._lock:
            self._process = None
        self._update(job, pid=None)
        self._check_cancelled(job)
        if code != 0:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
            tail = " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:] if line.strip())
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise TrainingError(f"{command[3]} failed ({how}); log {log}: {tail[-1500:]}")


def summarize_comparison(payload: dict, candidate: Path, serving: Path, split: str) -> dict:
    """Both models' strict micro F1 with intervals and their paired difference, from ``evaluate --json``."""
    comparison = payload["comparison"]
    rows = {row["model"]: row for row in comparison["table"]}
    paired = comparison["paired"][0]
    if (paired["a"], paired["b"]) != (str(candidate), str(serving)):  # evaluate's own order
        raise TrainingError(f"unexpected comparison order: {paired['a']} vs {paired['b']}")
    return {
        "split": split,
        "documents": rows[str(candidate)]["documents"],
        "candidate": rows[str(candidate)]["strict"],
        "serving": rows[str(serving)]["strict"],
        "difference": paired["strict"],
        "bootstrap": comparison["bootstrap"],
    }


def should_promote(comparison: dict, margin: float = 0.0) -> bool:
    """Whether the candidate is not worse: its strict micro F1 minus the serving model's is at
    least ``-margin`` on the same documents (``summarize_comparison``'s dict)."""
    return comparison["difference"]["difference"] >= -margin


def _interval(leaf: dict, key: str = "f1") -> str:
    low, high = leaf.get("ci_low"), leaf.get("ci_high")
    bounds = f" ({low:.3f}-{high:.3f})" if low is not None and high is not None else ""
    return f"{leaf[key]:.3f}{bounds}"


def describe(comparison: dict) -> str:
    """``candidate F1 0.812 (0.78-0.84) vs serving 0.801 (...), difference +0.011 (...)``."""
    difference = comparison["difference"]
    return (
        f"strict micro F1 on {comparison['documents']} {comparison['split']} documents:"
        f" candidate {_interval(comparison['candidate'])} vs serving {_interval(comparison['serving'])},"
        f" difference {difference['difference']:+.3f}"
        + (
            f" ({difference['ci_low']:+.3f} to {difference['ci_high']:+.3f})"
            if difference.get("ci_low") is not None
            else ""
        )
    )
