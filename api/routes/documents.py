from __future__ import annotations

import logging
import unicodedata
from pathlib import Path as FilePath
from pathlib import PurePosixPath
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy.exc import IntegrityError, OperationalError

from api import admission
from api.deps import (
    IngestPrincipal,
    SearchPrincipal,
    SessionDep,
    SettingsDep,
    client_ip,
    release_connection,
)
from api.errors import ErrorOut
from api.multipart import ReceivedFile, UploadReader
from api.schemas import ChunkOut, DocumentList, DocumentOut, UploadReport
from core import access
from core.errors import Forbidden, NotFound, ZhikuError
from core.models import DocStatus, Document, Permission
from core.repo import audit, documents, libraries
from core.repo import chunks as chunk_repo
from core.settings import Settings
from core.storage import OriginalStore, PageCache, disk_full, is_disk_full, require_free_space
from core.tasks import enqueue_ingest, enqueue_sync_index
from ingest.pages import render_pdf_page

log = logging.getLogger(__name__)
router = APIRouter(tags=["documents"])
#: Page images are the document's own content: private caches only, for an hour.
PAGE_CACHE_CONTROL = "private, max-age=3600"
MAX_PAGE = 100_000

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


def _content_length(request: Request) -> int:
    try:
        return max(int(request.headers.get("content-length", "0")), 0)
    except ValueError:
        return 0


@router.post(
    "/libraries/{library_id}/documents",
    response_model=UploadReport,
    status_code=202,
    openapi_extra=UPLOAD_BODY,
    responses={
        507: {
            "model": ErrorOut,
            "description": "`disk_full`: the data disk has too little free space; nothing "
            "was stored (an administrator must free space, then upload again)",
        }
    },
)
async def upload(
    library_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    p: IngestPrincipal,
) -> UploadReport:
    def check() -> None:
        access.require_library(session, p, library_id, Permission.write)
        # A disk that cannot take the upload refuses it before a byte is read (507 disk_full).
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        require_free_space(settings.data_dir, settings.min_free_bytes, _content_length(request))
        release_connection(session)  # not held while the files come in: that can take minutes

    def admit(files: list[ReceivedFile]) -> tuple[UploadReport, list[tuple[int, int]]]:
        stored: list[str] = []
        try:
            report, queued = admission.admit(
                session, settings, library_id, files, p.user.id, stored=stored
            )
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
        except OperationalError as exc:
            if not is_disk_full(exc):  # SQLite in the data dir, or PostgreSQL's own disk
                raise
            session.rollback()
            admission.discard_new_originals(session, settings, stored)
            raise disk_full() from exc
        except IntegrityError:
            # The library was deleted while the files came in: its rows are gone.
            session.rollback()
            if libraries.get(session, library_id) is None:
                raise NotFound(f"library {library_id} not found") from None
            raise
        return report, queued

    # The database and the files are worked on in worker threads, never on the event loop.
    await anyio.to_thread.run_sync(check)
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
        report, queued = await anyio.to_thread.run_sync(admit, files)
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
    q: str | None = Query(
        None,
        max_length=200,
        description="Only documents whose file name, title or folder contains this text "
        "(ignoring case; taken literally, % and _ included)",
    ),
    ids: list[int] | None = Query(
        None,
        max_length=1000,
        description="Only these documents (repeat the parameter); deleted ones are included, "
        "so that a client following an upload sees them go",
    ),
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=1000),
) -> DocumentList:
    access.require_library(session, p, library_id)
    rows, total = documents.list_for_library(
        session,
        library_id,
        status=status.value if status else None,
        ids=ids,
        offset=offset,
        limit=limit,
        only=access.document_filters(session, p, [library_id]).get(library_id),
        q=q.strip() if q else None,
    )
    return DocumentList(items=[_out(d) for d in rows], total=total, offset=offset, limit=limit)


@router.get("/documents/{document_id}", response_model=DocumentOut)
def get_document(document_id: int, session: SessionDep, p: SearchPrincipal) -> DocumentOut:
    return _out(access.require_document(session, p, document_id))


@router.get("/documents/{document_id}/chunks", response_model=list[ChunkOut])
def document_chunks(
    document_id: int,
    session: SessionDep,
    p: SearchPrincipal,
    page: int | None = Query(
        None, ge=1, le=MAX_PAGE, description="Only the chunks whose page span covers this page"
    ),
) -> list[ChunkOut]:
    doc = access.require_document(session, p, document_id)
    assert doc.id is not None
    return [
        ChunkOut.model_validate(c, from_attributes=True)
        for c in chunk_repo.for_document(session, doc.id, page)
    ]


def content_disposition(filename: str, fallback_stem: str = "document") -> str:
    """`attachment` with an ASCII `filename` for old clients and the exact name, UTF-8 and
    percent-encoded, in `filename*` (RFC 6266 / RFC 5987)."""
    name = filename.replace("\r", " ").replace("\n", " ") or fallback_stem
    folded = unicodedata.normalize("NFKD", name)
    ascii_name = "".join(
        c if 32 <= ord(c) < 127 and c not in '"\\' else "_"
        for c in folded
        if not unicodedata.combining(c)
    )
    suffix = PurePosixPath(ascii_name).suffix
    stem = ascii_name[: len(ascii_name) - len(suffix)] if suffix else ascii_name
    if not any(c.isalnum() for c in stem):  # nothing readable left (a Chinese name)
        ascii_name = fallback_stem + (suffix if suffix.isascii() else "")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _original(settings: Settings, doc: Document) -> FilePath:
    """Where the document's original is stored; 404 `original_missing` when it is not."""
    path = OriginalStore(settings.originals_dir).path_for(doc.sha256)
    if not path.is_file():
        raise NotFound(
            f"the original file of document {doc.id} is missing from storage; upload it again",
            code="original_missing",
        )
    return path


FILE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The original file as uploaded, as an attachment",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get(
    "/documents/{document_id}/file",
    response_class=FileResponse,
    responses=FILE_RESPONSES,
)
def download(
    document_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    p: SearchPrincipal,
) -> FileResponse:
    """Download the original. Anyone who may read the document, when its library allows
    downloads; its managers always. Otherwise 403 `downloads_disabled`."""
    doc = access.require_document(session, p, document_id)
    assert doc.id is not None
    lib, perm = access.require_library(session, p, doc.library_id)
    if perm != Permission.manage and not lib.allow_download:
        raise Forbidden(
            "downloads are turned off for this library; its managers can turn them on",
            code="downloads_disabled",
        )
    path = _original(settings, doc)
    audit.record(
        session,
        "document.download",
        **p.audit_fields(),
        target_type="document",
        target_id=document_id,
        client_ip=client_ip(request),
        library_id=doc.library_id,
        filename=doc.filename,
    )
    session.commit()
    return FileResponse(
        path,
        media_type=doc.media_type or "application/octet-stream",
        headers={
            "Content-Disposition": content_disposition(doc.filename, f"document-{doc.id}"),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
        },
    )


PAGE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The page as a PNG image",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get(
    "/documents/{document_id}/pages/{page}",
    response_class=Response,
    responses=PAGE_RESPONSES,
)
def page_image(
    document_id: int,
    session: SessionDep,
    settings: SettingsDep,
    p: SearchPrincipal,
    page: int = Path(ge=1, le=MAX_PAGE, description="1-based page number"),
) -> Response:
    """A page of a PDF document as a PNG image (what its chunks' `page_start`/`page_end`
    point to). Reading the document is enough: it is the same content as its chunks."""
    doc = access.require_document(session, p, document_id)
    assert doc.id is not None
    if doc.kind != "pdf":
        raise NotFound(
            f"document {document_id} is not a PDF: only PDF pages can be shown as images",
            code="not_a_pdf",
        )
    if doc.status != DocStatus.ready:
        raise NotFound(
            f"document {document_id} is not ready yet (status: {doc.status})",
            code="not_ready",
        )
    if not doc.page_count or page > doc.page_count:
        count = doc.page_count or 0
        raise NotFound(
            f"page {page} is out of range: document {document_id} has {count} "
            f"page{'s' if count != 1 else ''}",
            code="page_out_of_range",
        )
    cache = PageCache(settings.page_cache_dir)
    png = cache.get(doc.id, doc.version, page)
    if png is None:
        original = _original(settings, doc)
        session.close()  # no database connection held while the renderer works
        png = render_pdf_page(original, page, tmp_dir=settings.tmp_dir)
        cache.put(doc.id, doc.version, page, png)
    return Response(
        png,
        media_type="image/png",
        headers={"Cache-Control": PAGE_CACHE_CONTROL, "X-Content-Type-Options": "nosniff"},
    )


@router.delete("/documents/{document_id}", status_code=204)
def delete_document(
    document_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    p: IngestPrincipal,
) -> None:
    doc = access.require_document(session, p, document_id, Permission.write)
    assert doc.id is not None
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
    PageCache(settings.page_cache_dir).purge(doc.id)
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
    PageCache(settings.page_cache_dir).purge(doc.id)  # the old version's pages
    _enqueue([(doc.id, doc.version)], settings)
    return _out(doc)
