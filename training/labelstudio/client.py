"""Talk to a Label Studio server (SDK 2.x): push a project, tasks and predictions; pull snapshots.

Every call goes through ``LabelStudioConnection.call``: connection errors, timeouts, 429 and
5xx answers are retried with exponential backoff, then fail with a message naming the server;
401/403/404 fail at once with what to fix. The API key comes from an environment variable
(``LABEL_STUDIO_API_KEY`` unless a config names another) or, for the local server started by
``python -m training labelstudio start``, from its data dir. It is never printed, logged or
written: not in messages, snapshots, manifests, configs or model cards.

Tasks are keyed on ``data.doc_id`` (Label Studio reuses task ids after deletes and re-importing
a task duplicates it), so pushing the same export twice imports nothing the second time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from training.config import API_KEY_ENV, SNAPSHOT_DIR, URL_ENV, DataConfig, LabelStudioSource
from training.data.export import task_text
from training.errors import LabelStudioError
from training.files import write_atomically
from training.labelstudio import server
from training.labelstudio.predictions import LabelingNames, labeling_names, predict_texts
from training.schema import labeling_config_xml

SNAPSHOT_EXPORT = "export.json"
SNAPSHOT_MANIFEST = "manifest.json"
PAGE_SIZE = 100
# The Data Manager filters that select tasks with any annotation, cancelled ones included
# (what Label Studio's own JSON export contains).
ANNOTATED = [
    {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0},
    {"filter": "filter:tasks:cancelled_annotations", "operator": "greater", "type": "Number", "value": 0},
]
UNANNOTATED = [
    {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0},
    {"filter": "filter:tasks:cancelled_annotations", "operator": "equal", "type": "Number", "value": 0},
]
# Task and annotation fields of Label Studio's JSON export; the Data Manager's list adds UI-only
# ones (annotators, created_ago, ...) that a snapshot leaves out.
EXPORT_TASK_FIELDS = (
    "id",
    "data",
    "annotations",
    "predictions",
    "drafts",
    "meta",
    "created_at",
    "updated_at",
    "inner_id",
    "total_annotations",
    "cancelled_annotations",
    "total_predictions",
    "project",
)
UI_ONLY_ANNOTATION_FIELDS = ("created_username", "created_ago")
# Sent when importing an annotation; the server assigns ids, times and the project.
IMPORT_ANNOTATION_FIELDS = ("result", "was_cancelled", "ground_truth", "lead_time", "completed_by")
UNCERTAINTY_SAMPLING = "Uncertainty sampling"

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry connection errors, timeouts, 429 and 5xx."""

    attempts: int = 5
    initial_delay_s: float = 1.0
    max_delay_s: float = 20.0
    timeout_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with 20% jitter before retry number ``attempt`` (0-based)."""
        base = min(self.initial_delay_s * 2**attempt, self.max_delay_s)
        return base * random.uniform(0.8, 1.2)


def resolve_url(url: str | None = None) -> str:
    """The server URL: the argument, else ``$LABEL_STUDIO_URL``, else the local server if running."""
    url = url or os.environ.get(URL_ENV)
    if not url:
        local = server.status()
        if local is None:
            raise LabelStudioError(
                f"no Label Studio URL: pass --url, set {URL_ENV}, or start the local server"
                " (python -m training labelstudio start)"
            )
        url = local.url
    return url.rstrip("/")


def resolve_api_key(url: str, api_key_env: str = API_KEY_ENV) -> str:
    """The API key from ``$api_key_env``; for the local server, its own token when that is unset."""
    key = os.environ.get(api_key_env, "").strip()
    if key:
        return key
    local = server.status()
    if local is not None and local.url == url.rstrip("/"):
        credentials = server.local_credentials(Path(local.data_dir))
        if credentials is not None:
            return credentials.token
    raise LabelStudioError(
        f"no API key for {url}: set {api_key_env} to your token (Label Studio: Account & Settings"
        " -> Personal Access Token, or a legacy token)"
    )


class LabelStudioConnection:
    """An SDK client for one server, with this project's retry policy and error messages."""

    def __init__(self, url: str, api_key: str, retry: RetryPolicy = RetryPolicy()) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        # The SDK's own retries are off: ``call`` retries timeouts too and owns the messages.
        self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=retry.timeout_s, max_retries=0)

    def __repr__(self) -> str:  # never the key
        return f"LabelStudioConnection({self.url!r})"

    def call(
        self,
        what: str,
        request: Callable[[], T],
        before_retry: Callable[[], None] | None = None,
        missing_ok: bool = False,
    ) -> T | None:
        """Run one SDK request: retry transient failures with backoff, explain the final one.

        ``what`` names the operation in messages ("pull project 3"). ``before_retry`` runs
        before each retry (push uses it to drop what a lost answer had already imported).
        ``missing_ok``: a 404 returns None instead of failing.
        """
        failure = ""
        for attempt in range(self.retry.attempts):
            if attempt and before_retry is not None:
                before_retry()
            try:
                return request()
            except httpx.TimeoutException:
                failure = f"no answer within {self.retry.timeout_s:g} s"
            except httpx.TransportError as exc:
                failure = (
                    "connection refused or unreachable"
                    if isinstance(exc, httpx.ConnectError)
                    else type(exc).__name__
                )
            except ApiError as exc:
                status = exc.status_code or 0
                if status == 404 and missing_ok:
                    return None
                if status != 429 and status < 500:
                    raise LabelStudioError(self._refusal(what, status, exc.body)) from None
                failure = f"HTTP {status}"
            if attempt + 1 < self.retry.attempts:
                time.sleep(self.retry.delay(attempt))
        raise LabelStudioError(
            f"{what}: {self.url} failed {self.retry.attempts} times ({failure}); check that the server"
            " is up (python -m training labelstudio status) and its log, then re-run"
        )

    def _refusal(self, what: str, status: int, body: Any) -> str:
        if status == 401:
            return (
                f"{what}: {self.url} rejected the API key (401): set {API_KEY_ENV} (or the variable"
                " your config names in data.label_studio.api_key_env) to a valid token"
            )
        if status == 403:
            return (
                f"{what}: the API key's user may not do this on {self.url} (403): use a token of a"
                " project member, or enable legacy tokens in the organization settings"
            )
        if status == 404:
            return f"{what}: not found on {self.url} (404): check the project id and the URL"
        detail = body if isinstance(body, str) else json.dumps(body, default=str)
        return f"{what}: {self.url} refused the request (HTTP {status}): {detail[:300]}"


def connect(
    url: str | None = None, api_key_env: str = API_KEY_ENV, retry: RetryPolicy = RetryPolicy()
) -> LabelStudioConnection:
    """A connection to ``url`` (see ``resolve_url``) with the key from ``api_key_env``."""
    resolved = resolve_url(url)
    return LabelStudioConnection(resolved, resolve_api_key(resolved, api_key_env), retry)


def _as_dict(item: Any) -> dict:
    return item if isinstance(item, dict) else item.model_dump(mode="json")


def _query(items: list[dict], conjunction: str, ordering: str = "tasks:id") -> str:
    return json.dumps({"filters": {"conjunction": conjunction, "items": items}, "ordering": [ordering]})


def iter_pages(
    connection: LabelStudioConnection, what: str, fetch: Callable[[int], Any], page_size: int = PAGE_SIZE
) -> Iterator[list[Any]]:
    """The items of a paged list, one page at a time: ``fetch(page)`` asks for page ``page`` (from 1).

    Past the last page the server answers 404 (the SDK's pager says has_next even on a short
    last page): that, or a short page, ends the list.
    """
    page = 1
    while True:
        result = connection.call(f"{what} (page {page})", lambda page=page: fetch(page), missing_ok=page > 1)
        if result is None:
            return
        items = list(result.items or [])
        if items:
            yield items
        if len(items) < page_size:
            return
        page += 1


def iter_task_pages(
    connection: LabelStudioConnection,
    project: int,
    query: str | None = None,
    fields: str = "all",
    page_size: int = PAGE_SIZE,
) -> Iterator[list[dict]]:
    """The project's tasks, one page (a list of task dicts) at a time: bounded memory."""
    pages = iter_pages(
        connection,
        f"list tasks of project {project}",
        lambda page: connection.sdk.tasks.list(
            project=project, page=page, page_size=page_size, query=query, fields=fields
        ),
        page_size,
    )
    for items in pages:
        yield [_as_dict(item) for item in items]


def get_project(connection: LabelStudioConnection, project: int) -> Any:
    """The project (a clear 404 message when the id is wrong)."""
    return connection.call(f"read project {project}", lambda: connection.sdk.projects.get(id=project))


# Push


@dataclass
class ProjectPush:
    """What ``push_project`` found or did."""

    id: int
    title: str
    created: bool = False
    config_updated: bool = False


def push_project(
    connection: LabelStudioConnection, title: str, label_config: str | None = None
) -> ProjectPush:
    """Find the project titled ``title`` or create it, with the schema's labeling config.

    Re-running changes nothing; a project whose config differs (the schema changed) gets the
    new config.
    """
    label_config = label_config or labeling_config_xml()
    matches = _projects_titled(connection, title)
    if len(matches) > 1:
        ids = ", ".join(str(p.id) for p in matches)
        raise LabelStudioError(
            f"{connection.url}: several projects are titled {title!r} (ids {ids}); rename all but one"
        )
    if not matches:
        project = connection.call(
            f"create project {title!r}",
            lambda: connection.sdk.projects.create(title=title, label_config=label_config),
        )
        return ProjectPush(project.id, title, created=True)
    project = get_project(connection, matches[0].id)
    if (project.label_config or "").strip() == label_config.strip():
        return ProjectPush(project.id, title)
    connection.call(
        f"update the labeling config of project {project.id}",
        lambda: connection.sdk.projects.update(id=project.id, label_config=label_config),
    )
    return ProjectPush(project.id, title, config_updated=True)


def _projects_titled(connection: LabelStudioConnection, title: str) -> list[Any]:
    """Projects whose title is exactly ``title`` (the server's filter matches substrings)."""
    pages = iter_pages(
        connection,
        "list projects",
        lambda page: connection.sdk.projects.list(title=title, page=page, page_size=PAGE_SIZE),
    )
    return [project for items in pages for project in items if project.title == title]


def existing_doc_ids(connection: LabelStudioConnection, project: int) -> set[str]:
    """The ``data.doc_id`` of every task already in the project."""
    return {
        str(task["data"]["doc_id"])
        for page in iter_task_pages(connection, project, fields="task_only")
        for task in page
        if isinstance(task.get("data"), dict) and task["data"].get("doc_id") is not None
    }


def import_shape(task: dict, known_users: set[int]) -> dict:
    """A task in Label Studio's import shape: data, annotations (and full predictions).

    ``completed_by`` is kept only for users the server knows; other annotations are credited
    to the token's user (the import would fail otherwise).
    """
    annotations = []
    for annotation in task.get("annotations") or []:
        item = {key: annotation[key] for key in IMPORT_ANNOTATION_FIELDS if key in annotation}
        item["ground_truth"] = bool(annotation.get("ground_truth", False))
        user = item.get("completed_by")
        if isinstance(user, dict):
            user = user.get("id")
        if user in known_users:
            item["completed_by"] = user
        else:
            item.pop("completed_by", None)
        annotations.append(item)
    predictions = [
        {key: p[key] for key in ("result", "score", "model_version") if key in p}
        for p in task.get("predictions") or []
        if isinstance(p, dict) and "result" in p
    ]
    shaped: dict = {"data": task["data"], "annotations": annotations}
    if predictions:
        shaped["predictions"] = predictions
    return shaped


def _import_batch(
    connection: LabelStudioConnection, project: int, batch: list[dict], known_users: set[int]
) -> list[int]:
    """Import one batch; the new task ids of the request that succeeded.

    A retry leaves out what an attempt whose answer was lost had already imported.
    """
    pending = list(batch)

    def drop_imported() -> None:
        # The server may have imported the batch and lost the answer: never import twice.
        nonlocal pending
        present = existing_doc_ids(connection, project)
        pending = [task for task in pending if str(task["data"]["doc_id"]) not in present]

    def request():
        if not pending:
            return None
        return connection.sdk.projects.import_tasks(
            id=project, request=[import_shape(task, known_users) for task in pending], return_task_ids=True
        )

    response = connection.call(
        f"import {len(batch)} tasks into project {project}", request, before_retry=drop_imported
    )
    return list(getattr(response, "task_ids", None) or [])


@dataclass
class TaskPush:
    """What ``push_tasks`` imported and skipped."""

    imported: int = 0
    skipped: int = 0
    annotations: int = 0
    task_ids: list[int] = field(default_factory=list)


def push_tasks(
    connection: LabelStudioConnection, project: int, tasks: Sequence[dict], batch_size: int = 100
) -> TaskPush:
    """Import ``tasks`` (export shape) that the project does not hold yet, keyed on ``data.doc_id``."""
    seen: dict[str, int] = {}
    for n, task in enumerate(tasks):
        data = task.get("data")
        doc_id = data.get("doc_id") if isinstance(data, dict) else None
        if doc_id is None:
            raise LabelStudioError(
                f"task {task.get('id', n)}: no data.doc_id; push keys tasks on it so that a second"
                " push imports nothing twice (give every task a unique data.doc_id)"
            )
        if str(doc_id) in seen:
            raise LabelStudioError(
                f"task {task.get('id', n)}: doc_id {doc_id!r} repeats task {seen[str(doc_id)]}"
            )
        seen[str(doc_id)] = task.get("id", n)
    get_project(connection, project)
    present = existing_doc_ids(connection, project)
    users = connection.call("list users", lambda: connection.sdk.users.list())
    known_users = {_as_dict(u)["id"] for u in users}
    pending = [task for task in tasks if str(task["data"]["doc_id"]) not in present]
    report = TaskPush(skipped=len(tasks) - len(pending))
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        report.task_ids += _import_batch(connection, project, batch, known_users)
        report.imported += len(batch)
        report.annotations += sum(len(t.get("annotations") or []) for t in batch)
    return report


@dataclass
class PredictionPush:
    """What ``push_predictions`` did."""

    model_version: str
    predicted: int = 0
    already_predicted: int = 0
    scores: list[float] = field(default_factory=list)


def unannotated_tasks(connection: LabelStudioConnection, project: int) -> Iterator[list[dict]]:
    """Pages of the project's tasks that have no annotation (cancelled ones count as annotated)."""
    yield from iter_task_pages(connection, project, query=_query(UNANNOTATED, "and"))


def _has_prediction(connection: LabelStudioConnection, task_id: int, version: str) -> bool:
    task = connection.call(f"read task {task_id}", lambda: connection.sdk.tasks.get(id=task_id))
    return any(_as_dict(p).get("model_version") == version for p in task.predictions or [])


def _import_predictions(
    connection: LabelStudioConnection, project: int, version: str, tasks: list[dict], predictions: list[dict]
) -> None:
    """Import one page of predictions; a retry leaves out tasks a lost answer had already served."""
    pending = list(zip(tasks, predictions))

    def drop_predicted() -> None:
        nonlocal pending
        pending = [(t, p) for t, p in pending if not _has_prediction(connection, t["id"], version)]

    def request():
        if not pending:
            return None
        return connection.sdk.projects.import_predictions(
            id=project, request=[{"task": task["id"], **prediction} for task, prediction in pending]
        )

    connection.call(
        f"import {len(tasks)} predictions into project {project}", request, before_retry=drop_predicted
    )


def push_predictions(
    connection: LabelStudioConnection,
    project: int,
    tagger: Any,
    version: str,
    order_by_uncertainty: bool = True,
) -> PredictionPush:
    """Predict the project's unannotated tasks with ``tagger`` and import them as pre-annotations.

    Tasks that already hold a prediction of ``version`` are skipped (re-running adds nothing).
    With ``order_by_uncertainty`` the project's model version becomes ``version`` and its
    sampling "Uncertainty sampling": Label Studio then hands annotators the tasks with the
    lowest prediction score (least confident) first.
    """
    details = get_project(connection, project)
    names: LabelingNames = labeling_names(details.label_config)
    report = PredictionPush(version)
    for page in unannotated_tasks(connection, project):
        todo = []
        for task in page:
            if any(_as_dict(p).get("model_version") == version for p in task.get("predictions") or []):
                report.already_predicted += 1
            else:
                todo.append(task)
        if not todo:
            continue
        texts = [task_text(t, names.text_field, allow_blank=True) for t in todo]
        predictions = predict_texts(tagger, texts, names, version)
        _import_predictions(connection, project, version, todo, predictions)
        report.predicted += len(todo)
        report.scores += [p["score"] for p in predictions]
    if order_by_uncertainty:
        connection.call(
            f"set uncertainty sampling on project {project}",
            lambda: connection.sdk.projects.update(
                id=project, model_version=version, sampling=UNCERTAINTY_SAMPLING, show_collab_predictions=True
            ),
        )
    return report


def ml_backend_ids(connection: LabelStudioConnection, project: int, backend_url: str) -> list[int]:
    """Ids of the project's ML backends registered at ``backend_url``."""
    backends = connection.call("list ML backends", lambda: connection.sdk.ml.list(project=project))
    return [
        _as_dict(b)["id"]
        for b in backends or []
        if _as_dict(b).get("url", "").rstrip("/") == backend_url.rstrip("/")
    ]


def disconnect_ml_backend(connection: LabelStudioConnection, backend_id: int) -> None:
    """Remove an ML backend registration (what ``serve --connect`` does when it exits)."""
    connection.call(
        f"disconnect ML backend {backend_id}",
        lambda: connection.sdk.ml.delete(id=backend_id),
        missing_ok=True,
    )


def connect_ml_backend(
    connection: LabelStudioConnection,
    project: int,
    backend_url: str,
    title: str = "training serve",
    auth: tuple[str, str] | None = None,
) -> int:
    """Connect the ML backend at ``backend_url`` to the project (once); its id.

    Label Studio checks ``/health`` and ``/setup`` as it connects, and from then on asks the
    backend for a prediction when an annotator opens a task that has none. ``auth`` (user,
    password): the backend wants HTTP basic auth, which Label Studio then sends.
    """
    existing = ml_backend_ids(connection, project, backend_url)
    if existing:
        return existing[0]
    options: dict[str, Any] = {}
    if auth is not None:
        options = {"auth_method": "BASIC_AUTH", "basic_auth_user": auth[0], "basic_auth_pass": auth[1]}
    created = connection.call(
        f"connect ML backend {backend_url} to project {project}",
        lambda: connection.sdk.ml.create(
            project=project, url=backend_url, title=title, is_interactive=False, auto_update=True, **options
        ),
    )
    connection.call(
        f"turn on predictions for project {project}",
        lambda: connection.sdk.projects.update(
            id=project, show_collab_predictions=True, evaluate_predictions_automatically=True
        ),
    )
    return created.id


# The project events an ML backend counts for "train after N annotations" (serve --train-every).
ANNOTATION_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED"]


def connect_training_webhook(
    connection: LabelStudioConnection, project: int, webhook_url: str, auth: tuple[str, str] | None = None
) -> int:
    """A project webhook that sends annotation events to ``webhook_url`` (once); its id."""
    hooks = connection.call("list webhooks", lambda: connection.sdk.webhooks.list(project=project))
    for hook in hooks or []:
        hook = _as_dict(hook)
        if hook.get("url") == webhook_url and hook.get("project") == project:
            return hook["id"]
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    created = connection.call(
        f"create a webhook of project {project} to {webhook_url}",
        lambda: connection.sdk.webhooks.create(
            url=webhook_url, project=project, actions=ANNOTATION_ACTIONS, send_payload=True,
            send_for_all_actions=False, headers=headers,
        ),
    )  # fmt: skip
    return created.id


def remove_webhook(connection: LabelStudioConnection, webhook_id: int) -> None:
    """Delete a webhook (what ``serve --train-every`` does when it exits)."""
    connection.call(
        f"delete webhook {webhook_id}", lambda: connection.sdk.webhooks.delete(id=webhook_id), missing_ok=True
    )


# Pull


@dataclass(frozen=True)
class Snapshot:
    """A pulled export (``export.json``) and its manifest, in one directory."""

    directory: Path
    manifest: dict
    # True when a pull found the project unchanged and this earlier snapshot was kept instead.
    reused: bool = False

    @property
    def export_path(self) -> Path:
        return self.directory / SNAPSHOT_EXPORT


def parse_since(since: str | datetime | None) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 date or time (naive means UTC)."""
    if since is None or isinstance(since, datetime):
        moment = since
    else:
        try:
            moment = datetime.fromisoformat(since.strip().replace("Z", "+00:00"))
        except ValueError:
            raise LabelStudioError(
                f"--since {since!r} is not an ISO 8601 time (e.g. 2026-11-28 or 2026-11-28T09:30:00Z)"
            ) from None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def _changed_since(task: dict, since: datetime) -> bool:
    for annotation in task.get("annotations") or []:
        stamp = annotation.get("updated_at") or annotation.get("created_at")
        if stamp and parse_since(stamp) >= since:
            return True
    return False


def export_shape(task: dict) -> dict:
    """A task from the task list in the JSON export's shape (UI-only fields dropped)."""
    shaped = {key: task[key] for key in EXPORT_TASK_FIELDS if key in task}
    shaped["annotations"] = [
        {k: v for k, v in _as_dict(a).items() if k not in UI_ONLY_ANNOTATION_FIELDS}
        for a in task.get("annotations") or []
    ]
    return shaped


def annotated_tasks(
    connection: LabelStudioConnection, project: int, since: datetime | None = None
) -> Iterator[dict]:
    """Tasks with any annotation (cancelled included, as in the JSON export), page by page.

    With ``since``, only tasks with an annotation created or updated at or after it.
    """
    if since is None:
        query = _query(ANNOTATED, "or")
    else:
        # The task's updated_at moves with its annotations: the server narrows, we decide.
        stamp = since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        changed = {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime"}
        query = _query([{**changed, "value": stamp}], "and")
    for page in iter_task_pages(connection, project, query=query):
        for task in page:
            if not task.get("annotations"):
                continue
            if since is not None and not _changed_since(task, since):
                continue
            yield export_shape(task)


def snapshot_name(project: int, moment: datetime) -> str:
    """``project-<id>-<UTC time>``: sorts by time."""
    return f"project-{project}-{moment.strftime('%Y%m%dT%H%M%SZ')}"


def write_snapshot(tasks: Iterable[dict], directory: Path, manifest: dict) -> Snapshot:
    """Stream ``tasks`` into ``directory/export.json`` with its manifest, atomically.

    The export is written task by task (bounded memory) into a temporary directory that only
    replaces ``directory`` once complete: a failure leaves nothing behind.
    """
    final: dict = {}

    def write(target: Path) -> None:
        target.mkdir()
        digest = hashlib.sha256()
        counts = {"tasks": 0, "annotations": 0, "cancelled_annotations": 0}
        with (target / SNAPSHOT_EXPORT).open("wb") as handle:

            def emit(chunk: str) -> None:
                data = chunk.encode("utf-8")
                digest.update(data)
                handle.write(data)

            emit("[")
            for task in tasks:
                emit(("\n" if counts["tasks"] == 0 else ",\n") + json.dumps(task, ensure_ascii=False))
                counts["tasks"] += 1
                for annotation in task.get("annotations") or []:
                    key = "cancelled_annotations" if annotation.get("was_cancelled") else "annotations"
                    counts[key] += 1
            emit("\n]\n")
        final.update(manifest, **counts, export=SNAPSHOT_EXPORT, sha256=digest.hexdigest())
        (target / SNAPSHOT_MANIFEST).write_text(json.dumps(final, indent=1) + "\n", encoding="utf-8")

    write_atomically(Path(directory), write)
    return Snapshot(Path(directory), final)


def pull(
    connection: LabelStudioConnection,
    project: int,
    out: Path | None = None,
    since: str | datetime | None = None,
    snapshot_dir: Path = SNAPSHOT_DIR,
) -> Snapshot:
    """Export the project's annotated tasks into a snapshot directory (default under ``snapshot_dir``).

    The manifest records the server URL, project, time, ``since``, task and annotation counts
    and the export's sha256 (never the key). ``data.source: <snapshot>/export.json`` builds a
    dataset from it unchanged.
    """
    moment = parse_since(since)
    details = get_project(connection, project)
    pulled_at = datetime.now(timezone.utc)
    directory = Path(out) if out is not None else Path(snapshot_dir) / snapshot_name(project, pulled_at)
    manifest = {
        "server": connection.url,
        "project": project,
        "project_title": details.title,
        "pulled_at": pulled_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "since": moment.isoformat().replace("+00:00", "Z") if moment else None,
    }
    return write_snapshot(annotated_tasks(connection, project, moment), directory, manifest)


def pull_source(source: LabelStudioSource) -> Snapshot:
    """Pull the Label Studio source a config names (``data.label_studio``).

    When the project has not changed since the latest snapshot of the same pull (server,
    project, ``since``), that snapshot is reused and the new one removed: datasets and saved
    configs keep naming one export.
    """
    connection = connect(source.url, source.api_key_env)
    fresh = pull(connection, source.project, since=source.since, snapshot_dir=source.snapshot_dir)
    same_pull = ("server", "project", "since", "sha256")
    for directory in sorted(Path(source.snapshot_dir).glob(f"project-{source.project}-*"), reverse=True):
        if directory == fresh.directory or not (directory / SNAPSHOT_MANIFEST).is_file():
            continue
        manifest = json.loads((directory / SNAPSHOT_MANIFEST).read_text(encoding="utf-8"))
        if all(manifest.get(key) == fresh.manifest.get(key) for key in same_pull):
            shutil.rmtree(fresh.directory)
            return Snapshot(directory, manifest, reused=True)
        break  # only the latest earlier snapshot counts: anything older is history
    return fresh


def resolve_source(data: DataConfig) -> DataConfig:
    """``data`` with a file source: a ``data.label_studio`` project is pulled into a snapshot first.

    The returned section names the snapshot's export (and no server), so the config saved with
    a model rebuilds exactly the data it was trained on. ``train`` and the CLI call this before
    building a dataset (``training.data`` reads files only).
    """
    if data.label_studio is None:
        return data
    snapshot = pull_source(data.label_studio)
    print(f"pulled {summary(snapshot)}")
    return data.model_copy(update={"source": snapshot.export_path, "label_studio": None})


def summary(snapshot: Snapshot) -> str:
    """One line about a snapshot, for the CLI."""
    m = snapshot.manifest
    unchanged = " (project unchanged: snapshot reused)" if snapshot.reused else ""
    return (
        f"{m['tasks']} tasks, {m['annotations']} annotations ({m['cancelled_annotations']} cancelled)"
        f" from {m['server']} project {m['project']} -> {snapshot.export_path}{unchanged}"
    )
