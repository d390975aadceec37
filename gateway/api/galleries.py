"""Galleries, subjects and their faces (enrolment), with erasure receipts.

Scopes: creating and deleting a gallery needs `admin`; everything else here needs `enrol`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Query, Request, Response

from facestack.settings import Settings
from gateway import idempotency
from gateway.api import deps
from gateway.api.common import BACKEND, IMAGE, image_body, iso, problems
from gateway.audit import AuditLog
from gateway.auth import AdminKey, EnrolKey, Principal
from gateway.errors import ApiError
from gateway.faces import QualityGate, analyze_all, model_json, select
from gateway.gallery_sizes import GallerySizes
from gateway.images import ImageData
from gateway.inputs import read_images
from gateway.metrics import Metrics
from gateway.schemas import (
    EnrolForm,
    EnrolJson,
    EnrolResponse,
    ErasureReceipt,
    FacePage,
    Gallery,
    GalleryCreate,
    GalleryPage,
    Subject,
    SubjectCreate,
    SubjectPage,
    SubjectPatch,
    check_id,
)
from gateway.store import MAX_QUERY_WINDOW, Store, is_cursor
from gateway.triton_client import TritonPipeline

router = APIRouter(prefix="/v1/galleries", tags=["galleries"])
Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_QUERY_WINDOW - 1000, description="items to skip (small lists; use cursor)")]
Cursor = Annotated[str | None, Query(description="`next` of the previous page: lists of any length, in key order")]
_STORE = ("backend_unavailable", "timeout")
_WRITE = ("idempotency_conflict", "audit_unavailable")  # every write: Idempotency-Key, the audit line first


def _gallery(row: dict) -> dict:
    return {"gallery_id": row["gallery"], "embedder": row["embedder"], "metadata": row.get("metadata") or {},
            "created_at": iso(row["created"])}


def _subject(row: dict) -> dict:
    return {"gallery_id": row["gallery"], "subject_id": row["subject"], "name": row.get("name") or None,
            "metadata": row.get("metadata") or {}, "created_at": iso(row["created"]),
            "updated_at": iso(row["updated"])}


def _receipt(audit: AuditLog, rid: str, principal: Principal, operation: str, gallery: str, *,
             subject: str | None = None, face: str | None = None, subjects: int = 0, templates: int = 0,
             remaining: int = 0) -> dict:
    receipt = {"receipt_id": uuid.uuid4().hex, "operation": operation, "tenant": principal.tenant,
               "gallery_id": gallery, "subject_id": subject, "face_id": face, "subjects_deleted": subjects,
               "templates_deleted": templates, "remaining_templates": remaining,
               "erased_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "request_id": rid}
    audit.write(operation, tenant=principal.tenant, key_id=principal.key_id, gallery=gallery, subject=subject,
                face_ids=[face] if face else None, subjects_deleted=subjects, templates_deleted=templates,
                receipt_id=receipt["receipt_id"], request_id=rid)
    return receipt


def _announce(audit: AuditLog, rid: str, principal: Principal, operation: str, gallery: str,
              subject: str | None = None, face: str | None = None) -> None:
    """The audit line written before stored data changes: if the audit log cannot be written, the change is
    never made (the request fails with audit_unavailable)."""
    audit.write(operation, tenant=principal.tenant, key_id=principal.key_id, gallery=gallery, subject=subject,
                face_ids=[face] if face else None, outcome="started", request_id=rid)


def _page(rows: list[dict], total: int, limit: int, offset: int, cursor: str | None, item) -> dict:
    """A list page; `next` (the last row's key) while the page is full."""
    return {"items": [item(r) for r in rows], "total": total, "limit": limit, "offset": 0 if cursor else offset,
            "next": rows[-1]["pk"] if len(rows) == limit else None}


def _cursor(cursor: str | None, offset: int) -> str | None:
    if cursor is not None and (not is_cursor(cursor) or offset):
        raise ApiError("validation_error", "cursor must be a `next` value from a previous page (and offset 0)",
                       errors=[{"field": "cursor", "code": "invalid", "detail": "not a list cursor"}])
    return cursor


# ---- galleries ------------------------------------------------------------------------------------

@router.post("", status_code=201, response_model=Gallery, summary="Create a gallery",
             responses=problems("forbidden", "conflict", *_STORE, *_WRITE))
async def create_gallery(body: GalleryCreate, request: Request, response: Response, principal: AdminKey,
                         settings: deps.SettingsDep, store: deps.StoreDep, audit: deps.AuditDep,
                         rid: deps.RequestIdDep) -> dict | Response:
    async with idempotency.claim(request, principal.tenant, body.model_dump_json().encode()) as claim:
        if claim.replay:
            return claim.replay
        embedder = body.embedder or settings.gateway_default_embedder
        _announce(audit, rid, principal, "create_gallery", body.gallery_id)
        row = await store.create_gallery(principal.tenant, body.gallery_id, embedder, body.metadata or {})
        audit.write("create_gallery", tenant=principal.tenant, key_id=principal.key_id, gallery=body.gallery_id,
                    request_id=rid)
        response.headers["Location"] = f"/v1/galleries/{quote(body.gallery_id, safe='')}"
        result = {**_gallery(row), "subjects": 0, "templates": 0}
        claim.keep(201, Gallery, result, {"Location": response.headers["Location"]})
    return result


@router.get("", response_model=GalleryPage, summary="List the tenant's galleries",
            responses=problems("forbidden", *_STORE))
async def list_galleries(principal: EnrolKey, store: deps.StoreDep,
                         limit: Limit = 100, offset: Offset = 0, cursor: Cursor = None) -> dict:
    rows, total = await store.list_galleries(principal.tenant, limit, offset, _cursor(cursor, offset))
    return _page(rows, total, limit, offset, cursor, _gallery)


@router.get("/{gallery_id}", response_model=Gallery, summary="A gallery with its subject and template counts",
            responses=problems("forbidden", "gallery_not_found", *_STORE))
async def get_gallery(gallery_id: str, principal: EnrolKey, store: deps.StoreDep) -> dict:
    row = await store.get_gallery(principal.tenant, check_id(gallery_id, "gallery_id"))
    subjects, templates = await store.gallery_counts(principal.tenant, gallery_id)
    return {**_gallery(row), "subjects": subjects, "templates": templates}


@router.delete("/{gallery_id}", response_model=ErasureReceipt, summary="Erase a gallery, its subjects and templates",
               responses=problems("forbidden", "gallery_not_found", *_STORE, *_WRITE))
async def delete_gallery(gallery_id: str, request: Request, principal: AdminKey, store: deps.StoreDep,
                         audit: deps.AuditDep, rid: deps.RequestIdDep) -> dict | Response:
    check_id(gallery_id, "gallery_id")
    async with idempotency.claim(request, principal.tenant) as claim:
        if claim.replay:
            return claim.replay
        _announce(audit, rid, principal, "erase_gallery", gallery_id)
        subjects, templates, remaining = await store.delete_gallery(principal.tenant, gallery_id)
        result = _receipt(audit, rid, principal, "erase_gallery", gallery_id, subjects=subjects, templates=templates,
                          remaining=remaining)
        claim.keep(200, ErasureReceipt, result)
    return result


# ---- subjects -------------------------------------------------------------------------------------

@router.post("/{gallery_id}/subjects", status_code=201, response_model=Subject, summary="Create a subject",
             responses=problems("forbidden", "gallery_not_found", "conflict", *_STORE, *_WRITE))
async def create_subject(gallery_id: str, body: SubjectCreate, request: Request, response: Response,
                         principal: EnrolKey, store: deps.StoreDep, audit: deps.AuditDep,
                         rid: deps.RequestIdDep) -> dict | Response:
    check_id(gallery_id, "gallery_id")
    async with idempotency.claim(request, principal.tenant, body.model_dump_json().encode()) as claim:
        if claim.replay:
            return claim.replay
        _announce(audit, rid, principal, "create_subject", gallery_id, body.subject_id)
        row = await store.create_subject(principal.tenant, gallery_id, body.subject_id, body.name,
                                         body.metadata or {})
        audit.write("create_subject", tenant=principal.tenant, key_id=principal.key_id, gallery=gallery_id,
                    subject=body.subject_id, request_id=rid)
        response.headers["Location"] = f"/v1/galleries/{quote(gallery_id, safe='')}/subjects/" \
                                       f"{quote(body.subject_id, safe='')}"
        result = {**_subject(row), "faces": 0}
        claim.keep(201, Subject, result, {"Location": response.headers["Location"]})
    return result


@router.get("/{gallery_id}/subjects", response_model=SubjectPage, summary="List a gallery's subjects",
            responses=problems("forbidden", "gallery_not_found", *_STORE))
async def list_subjects(gallery_id: str, principal: EnrolKey, store: deps.StoreDep,
                        limit: Limit = 100, offset: Offset = 0, cursor: Cursor = None) -> dict:
    rows, total = await store.list_subjects(principal.tenant, check_id(gallery_id, "gallery_id"),
                                            limit, offset, _cursor(cursor, offset))
    return _page(rows, total, limit, offset, cursor, _subject)


@router.get("/{gallery_id}/subjects/{subject_id}", response_model=Subject, summary="A subject with its face count",
            responses=problems("forbidden", "gallery_not_found", "subject_not_found", *_STORE))
async def get_subject(gallery_id: str, subject_id: str, principal: EnrolKey, store: deps.StoreDep) -> dict:
    row = await store.get_subject(principal.tenant, check_id(gallery_id, "gallery_id"),
                                  check_id(subject_id, "subject_id"))
    _, faces = await store.list_faces(principal.tenant, gallery_id, subject_id, 1, 0)
    return {**_subject(row), "faces": faces}


@router.patch("/{gallery_id}/subjects/{subject_id}", response_model=Subject, summary="Change name or metadata",
              responses=problems("forbidden", "gallery_not_found", "subject_not_found", *_STORE, *_WRITE))
async def patch_subject(gallery_id: str, subject_id: str, body: SubjectPatch, request: Request, principal: EnrolKey,
                        store: deps.StoreDep, audit: deps.AuditDep, rid: deps.RequestIdDep) -> dict | Response:
    check_id(gallery_id, "gallery_id")
    check_id(subject_id, "subject_id")
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes:
        changes["name"] = changes["name"] or ""
    if "metadata" in changes:
        changes["metadata"] = changes["metadata"] or {}
    async with idempotency.claim(request, principal.tenant, body.model_dump_json(exclude_unset=True).encode()) \
            as claim:
        if claim.replay:
            return claim.replay
        _announce(audit, rid, principal, "update_subject", gallery_id, subject_id)
        row = await store.update_subject(principal.tenant, gallery_id, subject_id, changes)
        audit.write("update_subject", tenant=principal.tenant, key_id=principal.key_id, gallery=gallery_id,
                    subject=subject_id, request_id=rid)
        result = _subject(row)
        claim.keep(200, Subject, result)
    return result


@router.delete("/{gallery_id}/subjects/{subject_id}", response_model=ErasureReceipt,
               summary="Erase a subject and all its templates",
               responses=problems("forbidden", "gallery_not_found", "subject_not_found", *_STORE, *_WRITE))
async def delete_subject(gallery_id: str, subject_id: str, request: Request, principal: EnrolKey,
                         store: deps.StoreDep, audit: deps.AuditDep, rid: deps.RequestIdDep) -> dict | Response:
    check_id(gallery_id, "gallery_id")
    check_id(subject_id, "subject_id")
    async with idempotency.claim(request, principal.tenant) as claim:
        if claim.replay:
            return claim.replay
        _announce(audit, rid, principal, "erase_subject", gallery_id, subject_id)
        templates, remaining = await store.delete_subject(principal.tenant, gallery_id, subject_id)
        result = _receipt(audit, rid, principal, "erase_subject", gallery_id, subject=subject_id, subjects=1,
                          templates=templates, remaining=remaining)
        claim.keep(200, ErasureReceipt, result)
    return result


# ---- faces (enrolment) ----------------------------------------------------------------------------

@router.post("/{gallery_id}/subjects/{subject_id}/faces", status_code=201, response_model=EnrolResponse,
             summary="Enrol one or many face images (all or nothing)",
             description="Each image contributes its face (multi_face policy) as one template. If any image fails "
                         "(no face, low quality...), nothing is enrolled and `errors` lists every failing image.",
             responses=problems(*IMAGE, *BACKEND, "forbidden", "gallery_not_found", "subject_not_found", "conflict",
                                *_WRITE),
             openapi_extra=image_body(EnrolForm, EnrolJson, {"image": "one or more photos (repeat the part)"},
                                      {"image": [{"image_base64": "/9j/4AAQ..."}], "multi_face": "largest"}))
async def enrol(gallery_id: str, subject_id: str, request: Request, principal: EnrolKey, settings: deps.SettingsDep,
                triton: deps.TritonDep, store: deps.StoreDep, gate: deps.GateDep, sizes: deps.SizesDep,
                metrics: deps.MetricsDep, audit: deps.AuditDep, rid: deps.RequestIdDep) -> dict | Response:
    tenant = principal.tenant
    check_id(gallery_id, "gallery_id")
    check_id(subject_id, "subject_id")
    options, images = await read_images(request, EnrolForm, EnrolJson, {"image": "many"})
    parts = (options.model_dump_json().encode(), *(image.data for image in images["image"]))
    async with idempotency.claim(request, tenant, *parts) as claim:
        if claim.replay:
            return claim.replay
        result = await _enrol(principal, gallery_id, subject_id, options, images["image"], settings=settings,
                              triton=triton, store=store, gate=gate, sizes=sizes, metrics=metrics, audit=audit,
                              rid=rid)
        claim.keep(201, EnrolResponse, result)
    return result


async def _enrol(principal: Principal, gallery_id: str, subject_id: str, options: EnrolForm, items: list[ImageData],
                 *, settings: Settings, triton: TritonPipeline, store: Store, gate: QualityGate, sizes: GallerySizes,
                 metrics: Metrics, audit: AuditLog, rid: str) -> dict:
    tenant = principal.tenant
    gallery = await store.get_gallery(tenant, gallery_id)
    await store.get_subject(tenant, gallery_id, subject_id)  # 404 before spending Triton time
    names = [f"image[{i}]" if len(items) > 1 else "image" for i in range(len(items))]
    analyses = await analyze_all(triton, list(zip(names, items, strict=True)), gallery["embedder"], request_id=rid)
    faces, errors = [], []
    for name, analysis in zip(names, analyses, strict=True):
        try:
            faces.append(select(analysis, policy=options.multi_face, gate=gate, field=name))
        except ApiError as exc:
            errors.append({"field": name, "code": exc.code, "detail": exc.detail})
    if errors:
        first = errors[0]
        detail = first["detail"] if len(items) == 1 else \
            f"{len(errors)} of {len(items)} images failed, nothing was enrolled; first: {first['detail']}"
        raise ApiError(first["code"], detail, errors=errors)
    models = {(a.model, a.version) for a in analyses}
    if len(models) > 1:
        raise ApiError("backend_unavailable", "the embedder model changed during the request; retry", retry_after=1)
    model, version = models.pop()
    _announce(audit, rid, principal, "enrol", gallery_id, subject_id)
    face_ids, _ = await store.add_templates(tenant, gallery_id, subject_id, model, version,
                                            np.stack([f.embedding for f in faces]),
                                            settings.gateway_max_faces_per_subject)
    sizes.forget(tenant, gallery_id)  # identify's threshold depends on the gallery's size
    for analysis in analyses:
        metrics.faces.labels("enrol").observe(len(analysis.faces))
    audit.write("enrol", tenant=tenant, key_id=principal.key_id, gallery=gallery_id, subject=subject_id,
                face_ids=face_ids, faces=len(face_ids), model=f"{model}:{version}", request_id=rid)
    return {"gallery_id": gallery_id, "subject_id": subject_id, "model": model_json(analyses[0]),
            "faces": [{"face_id": fid, "image_index": i, "face": f.public()}
                      for i, (fid, f) in enumerate(zip(face_ids, faces, strict=True))],
            "request_id": rid}


@router.get("/{gallery_id}/subjects/{subject_id}/faces", response_model=FacePage, summary="List a subject's faces",
            responses=problems("forbidden", "gallery_not_found", "subject_not_found", *_STORE))
async def list_faces(gallery_id: str, subject_id: str, principal: EnrolKey, store: deps.StoreDep,
                     limit: Limit = 100, offset: Offset = 0) -> dict:
    rows, total = await store.list_faces(
        principal.tenant, check_id(gallery_id, "gallery_id"), check_id(subject_id, "subject_id"), limit, offset)
    items = [{"face_id": r["face_id"], "gallery_id": gallery_id, "subject_id": subject_id, "model": r["model"],
              "created_at": iso(r["created"])} for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.delete("/{gallery_id}/subjects/{subject_id}/faces/{face_id}", response_model=ErasureReceipt,
               summary="Erase one face template",
               responses=problems("forbidden", "gallery_not_found", "subject_not_found", "face_not_found", *_STORE,
                                  *_WRITE))
async def delete_face(gallery_id: str, subject_id: str, face_id: str, request: Request, principal: EnrolKey,
                      store: deps.StoreDep, audit: deps.AuditDep, rid: deps.RequestIdDep) -> dict | Response:
    for value, what in ((gallery_id, "gallery_id"), (subject_id, "subject_id"), (face_id, "face_id")):
        check_id(value, what)
    async with idempotency.claim(request, principal.tenant) as claim:
        if claim.replay:
            return claim.replay
        _announce(audit, rid, principal, "erase_face", gallery_id, subject_id, face_id)
        remaining = await store.delete_face(principal.tenant, gallery_id, subject_id, face_id)
        result = _receipt(audit, rid, principal, "erase_face", gallery_id, subject=subject_id, face=face_id,
                          templates=1, remaining=remaining)
        claim.keep(200, ErasureReceipt, result)
    return result
