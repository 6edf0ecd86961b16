"""Submit a job from a form: an image or an app, a command or a shell string, resources,
environment, labels and input files; "submit again" fills it from an earlier job."""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from kran.api.deps import MAX_ID
from kran.api.schemas import JobSubmit, classified, spec_for
from kran.domain.jobs import JobSpec
from kran.errors import InvalidInput, KranError, http_status
from kran.web.render import page
from kran.web.session import MAX_FIELDS, MAX_FILES, MAX_PART, Act, Look, services

router = APIRouter()
TEXT_FIELDS = ("image", "app", "cpus", "mem", "gpus", "disk", "timeout", "name", "account")


def _pairs(text: str, what: str) -> dict[str, str]:
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        k, sep, v = line.partition("=")
        if not sep or not k.strip():
            raise InvalidInput(f"{what} line {n}: write K=V", what)
        out[k.strip()] = v
    return out


def body_of(form: dict[str, str]) -> dict[str, Any]:
    """The form as the API's job body (JobSubmit), so the same checks apply."""
    body: dict[str, Any] = {k: form[k].strip() for k in TEXT_FIELDS if form.get(k, "").strip()}
    command = form.get("command", "")
    if form.get("mode") == "sh":
        if command.strip():
            body["sh"] = command
    else:
        try:
            argv = shlex.split(command)
        except ValueError as e:
            raise InvalidInput(f"command: {e} (or choose 'shell string')", "command") from None
        if argv:
            body["command"] = argv
    for name in ("retries", "priority"):
        if form.get(name, "").strip():
            body[name] = form[name].strip()
    if form.get("env", "").strip():
        body["env"] = _pairs(form["env"], "env")
    if form.get("labels", "").strip():
        body["labels"] = _pairs(form["labels"], "labels")
    if form.get("network") == "on":
        body["network"] = True
    return body


def form_of(spec: JobSpec) -> dict[str, str]:
    """An earlier job's spec as the form's fields ("submit again")."""
    r = spec.request
    shell = spec.shell and len(spec.command) == 3
    return {
        "image": spec.image or "",
        "app": spec.app or "",
        "mode": "sh" if shell else "args",
        "command": spec.command[2] if shell else shlex.join(spec.command),
        "cpus": r.cpus.text(1000),
        "mem": r.mem_mb.text(),
        "gpus": r.gpus.text(),
        "disk": r.disk_mb.text(),
        "timeout": f"{spec.timeout_s:g}" if spec.timeout_s else "",
        "retries": str(spec.retries),
        "priority": str(spec.priority),
        "name": spec.name or "",
        "account": spec.account or "",
        "env": "\n".join(f"{k}={v}" for k, v in spec.env.items()),
        "labels": "\n".join(f"{k}={v}" for k, v in spec.labels.items() if not k.startswith("kran.")),
        "network": "on" if spec.network else "",
    }


@router.get("/submit")
async def submit_form(
    request: Request, viewer: Look, from_: int | None = Query(None, alias="from", ge=1, le=MAX_ID)
) -> Response:
    values: dict[str, str] = {"mode": "sh", "cpus": "1", "mem": "512"}
    if from_ is not None:
        job = await run_in_threadpool(services(request).queries.visible_job, from_, viewer.who)
        values = form_of(job.spec)
    return page(request, "submit.html", viewer, values=values, from_job=from_)


@router.post("/submit")
async def submit(request: Request, viewer: Act) -> Response:
    form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_PART)  # as `Act` did
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    files = [f for f in form.getlist("input") if isinstance(f, UploadFile) and f.filename]
    suite = services(request)
    try:
        try:
            body = JobSubmit.model_validate(body_of(values))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise InvalidInput(f"{where}: {first.get('msg')}" if where else str(first.get("msg")), where) from None
        spec = spec_for(suite.jobs, viewer.who, viewer.who.user, body)
        (spec,) = await classified(suite.jobs, [spec], viewer.who.user)
        upload_id = None
        if files:
            named = [(f.filename.rsplit("/", 1)[-1] or "input", f.file) for f in files if f.filename]
            upload_id = await run_in_threadpool(suite.uploads.save_inputs, named)
            spec = replace(spec, inputs=upload_id)
        try:
            future = suite.jobs.submit([spec], viewer.who.user, None, viewer.who.is_admin, None, "")
            (job_id,) = await asyncio.wrap_future(future)
        except BaseException:
            if upload_id:
                suite.uploads.discard(upload_id)
            raise
    except KranError as e:
        return page(request, "submit.html", viewer, http_status(e), values=values, error=str(e), from_job=None)
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)
