from __future__ import annotations

import logging

from fastapi import APIRouter, Query, Request

from api import admission
from api.deps import IngestPrincipal, SearchPrincipal, SessionDep, SettingsDep, client_ip
from api.multipart import UploadReader
from api.schemas import ChunkOut, DocumentList, DocumentOut, UploadReport
from core import access
from core.errors import ZhikuError
from core.models import DocStatus, Document, Permission
from core.repo import audit, documents
from core.repo import chunks as chunk_repo
from core.tasks import enqueue_ingest, enqueue_sync_index

log = logging.getLogger(__name__)
router = APIRouter(tags=["documents"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more files, or .zip archives of folders; "
                            "a file name may carry a relative folder path (a/b/c.pdf)",
                        }
                    },
                    "required": ["files"],
                }
            }
        },
    }
}


def _out(doc: Document) -> DocumentOut:
    return DocumentOut.model_validate(doc, from_attributes=True)


def _enqueue(pairs: list[tuple[int, int]], settings: SettingsDep) -> None:
    """Best effort: if the broker is away the documents stay queued in the database and the
    workers' reconciler enqueues them again."""
    for doc_id, version in pairs:
        try:
            enqueue_ingest(doc_id, version, settings)
        except Exception:
            log.warning("could not enqueue document %s; the reconciler will", doc_id, exc_info=True)
            return


@router.post(
    "/libraries/{library_id}/documents",
    response_model=UploadReport,
    status_code=202,
    openapi_extra=UPLOAD_BODY,
)
async def upload(
    library_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    p: IngestPrincipal,
) -> UploadReport:
    access.require_library(session, p, library_id, Permission.write)
    reader = UploadReader(settings.tmp_dir, settings.max_upload_bytes)
    received = await reader.read(request)
    try:
        files = [f for f in received if f.field == "files"]
        if not files:
            raise ZhikuError(
                "no files received: send them in the multipart field 'files'",
                code="no_files",
                status=422,
            )
        report, queued = admission.admit(session, settings, library_id, files, p.user.id)
        audit.record(
            session,
            "document.upload",
            **p.audit_fields(),
            target_type="library",
            target_id=library_id,
            client_ip=client_ip(request),
            queued=report.queued,
            duplicates=report.duplicates,
            rejected=report.rejected,
        )
        session.commit()  # rows and originals are durable before we answer 202
    finally:
        reader.cleanup()
    if len(files) == 1 and report.rejected == 1 and len(report.items) == 1:
        item = report.items[0]
        raise ZhikuError(item.reason or "file rejected", code="rejected", status=422)
    _enqueue(queued, settings)
    return report


@router.get("/libraries/{library_id}/documents", response_model=DocumentList)
def list_documents(
    library_id: int,
    session: SessionDep,
    p: SearchPrincipal,
    status: DocStatus | None = None,
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=1000),
) -> DocumentList:
    access.require_library(session, p, library_id)
    rows, total = documents.list_for_library(
        session,
        library_id,
        status=status.value if status else None,
        offset=offset,
        limit=limit,
        only=access.document_filters(session, p, [library_id]).get(library_id),
    )
    return DocumentList(items=[_out(d) for d in rows], total=total, offset=offset, limit=limit)


@router.get("/documents/{document_id}", response_model=DocumentOut)
def get_document(document_id: int, session: SessionDep, p: SearchPrincipal) -> DocumentOut:
    return _out(access.require_document(session, p, document_id))


@router.get("/documents/{document_id}/chunks", response_model=list[ChunkOut])
def document_chunks(document_id: int, session: SessionDep, p: SearchPrincipal) -> list[ChunkOut]:
    doc = access.require_document(session, p, document_id)
    assert doc.id is not None
    return [
        ChunkOut.model_validate(c, from_attributes=True)
        for c in chunk_repo.for_document(session, doc.id)
    ]


@router.delete("/documents/{document_id}", status_code=204)
def delete_document(
    document_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    p: IngestPrincipal,
) -> None:
    doc = access.require_document(session, p, document_id, Permission.write)
    documents.mark_deleted(session, doc)
    audit.record(
        session,
        "document.delete",
        **p.audit_fields(),
        target_type="document",
        target_id=document_id,
        client_ip=client_ip(request),
        filename=doc.filename,
    )
    session.commit()
    try:
        enqueue_sync_index(doc.library_id, settings)
    except Exception:
        log.warning("could not enqueue index sync for library %s", doc.library_id, exc_info=True)


@router.post("/documents/{document_id}/reingest", response_model=DocumentOut, status_code=202)
def reingest(
    document_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    p: IngestPrincipal,
) -> DocumentOut:
    doc = access.require_document(session, p, document_id, Permission.write)
    documents.requeue(session, doc)
    audit.record(
        session,
        "document.reingest",
        **p.audit_fields(),
        target_type="document",
        target_id=document_id,
        client_ip=client_ip(request),
    )
    session.commit()
    assert doc.id is not None
    _enqueue([(doc.id, doc.version)], settings)
    return _out(doc)
