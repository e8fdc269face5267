"""Admit uploaded files into a library: expand zip archives safely, check each file's type,
store the original content-addressed and register its Document row (the caller commits before
answering, then enqueues). Shared by the upload route and `zhiku ingest`."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session

from api.multipart import ReceivedFile
from api.schemas import UploadItem, UploadReport
from core.errors import BadArchive, ZhikuError
from core.repo import documents
from core.settings import Settings
from core.storage import OriginalStore, disk_full, is_disk_full, require_free_space
from ingest.archive import MemberUnreadable, open_zip
from ingest.detect import MEDIA_TYPES, detect_type

WHOLE_FILE_SNIFF = 16 * 1024 * 1024
HEAD_SNIFF = 1024 * 1024


@dataclass(frozen=True)
class Candidate:
    """One file to admit: where its bytes are and its path inside the upload."""

    path: Path
    relpath: str
    size: int
    sha256: str


def split_relpath(name: str) -> tuple[str, str]:
    """'a/b/c.pdf' → ('a/b', 'c.pdf'), with '..', '.', empty and absolute parts removed."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        return "", "unnamed"
    return "/".join(parts[:-1]), parts[-1]


def _head(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size if size <= WHOLE_FILE_SNIFF else HEAD_SNIFF)


def admit(
    session: Session,
    settings: Settings,
    library_id: int,
    files: list[ReceivedFile],
    user_id: int | None,
    *,
    stored: list[str] | None = None,
) -> tuple[UploadReport, list[tuple[int, int]]]:
    """Returns the per-file report and the (document id, version) pairs to enqueue.

    The sha256 of every original this call newly wrote is appended to `stored`: if the
    caller's commit then fails, `discard_new_originals` removes them. When the disk is (or
    becomes) too full, DiskFull is raised, the session is rolled back and the originals this
    call wrote are removed: all or nothing, never some files stored without their rows."""
    store = OriginalStore(settings.originals_dir)
    items: list[UploadItem] = []
    queued: list[tuple[int, int]] = []
    written: list[str] = [] if stored is None else stored
    try:
        require_free_space(settings.data_dir, settings.min_free_bytes)
        for received in files:
            cand = Candidate(received.path, received.filename, received.size, received.sha256)
            for item in _admit_file(session, settings, store, library_id, cand, user_id, written):
                items.append(item)
                if item.status == "queued" and item.document_id is not None:
                    doc = documents.get(session, item.document_id)
                    assert doc is not None
                    queued.append((item.document_id, doc.version))
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        session.rollback()
        discard_new_originals(session, settings, written)
        if isinstance(exc, ZhikuError):
            raise
        raise disk_full() from exc
    report = UploadReport(
        queued=sum(i.status == "queued" for i in items),
        duplicates=sum(i.status == "duplicate" for i in items),
        rejected=sum(i.status == "rejected" for i in items),
        items=items,
    )
    return report, queued


def discard_new_originals(session: Session, settings: Settings, digests: list[str]) -> None:
    """After a rolled-back admission: remove the originals it wrote that no committed
    document refers to (another upload may have committed the same content meanwhile)."""
    if not digests:
        return
    store = OriginalStore(settings.originals_dir)
    for sha256 in set(digests) - documents.sha256_in_use(session, digests):
        store.delete(sha256)


def _admit_file(
    session: Session,
    settings: Settings,
    store: OriginalStore,
    library_id: int,
    cand: Candidate,
    user_id: int | None,
    written: list[str],
    in_archive: bool = False,
) -> Iterator[UploadItem]:
    folder, name = split_relpath(cand.relpath)
    shown = f"{folder}/{name}" if folder else name
    if cand.size == 0:
        yield UploadItem(file=shown, status="rejected", reason="file is empty")
        return
    if cand.size > settings.max_upload_bytes:
        yield UploadItem(file=shown, status="rejected", reason=_too_large(settings))
        return
    try:
        kind = detect_type(_head(cand.path, cand.size), name)
    except ZhikuError as exc:
        yield UploadItem(file=shown, status="rejected", reason=exc.reason)
        return
    if kind == "zip" and in_archive:
        yield UploadItem(
            file=shown,
            status="rejected",
            reason="archives inside archives are not expanded; unpack it and upload its files",
        )
        return
    if kind == "zip":
        yield from _admit_zip(session, settings, store, library_id, cand, shown, user_id, written)
        return
    if store.add(cand.path, cand.sha256):
        written.append(cand.sha256)
    reg = documents.register(
        session,
        documents.NewDocument(
            library_id=library_id,
            sha256=cand.sha256,
            filename=name,
            folder=folder,
            size=cand.size,
            kind=kind,
            media_type=MEDIA_TYPES.get(kind, "application/octet-stream"),
            created_by=user_id,
        ),
    )
    doc = reg.document
    if reg.duplicate:
        where = f"{doc.folder}/{doc.filename}" if doc.folder else doc.filename
        yield UploadItem(
            file=shown,
            document_id=doc.id,
            status="duplicate",
            reason=f"the same content is already in this library as {where!r} "
            f"(document {doc.id}); not ingested again",
        )
    else:
        yield UploadItem(file=shown, document_id=doc.id, status="queued")


def _admit_zip(
    session: Session,
    settings: Settings,
    store: OriginalStore,
    library_id: int,
    cand: Candidate,
    shown: str,
    user_id: int | None,
    written: list[str],
) -> Iterator[UploadItem]:
    """Each member of an archive becomes a document; its folder is the archive's folder plus
    the member's folder (a zipped folder — `wiki.zip` holding `wiki/…` — gives `wiki/…`, not
    `wiki/wiki/…`). Unsafe members are reported, not extracted."""
    archive_folder = shown.rsplit(".", 1)[0]
    try:
        with (
            open_zip(
                cand.path,
                max_members=settings.zip_max_members,
                max_total_uncompressed=settings.zip_max_total_bytes,
                max_ratio=settings.zip_max_ratio,
                max_member_bytes=settings.max_upload_bytes,
            ) as archive,
            tempfile.TemporaryDirectory(dir=_tmp(settings)) as tmp,
        ):
            name = archive_folder.rsplit("/", 1)[-1]
            if archive.members and all(m.path.startswith(name + "/") for m in archive.members):
                archive_folder = archive_folder[: -len(name)].rstrip("/") or "."
            for skipped in archive.skipped:
                yield UploadItem(
                    file=_inside(archive_folder, skipped.name),
                    status="rejected",
                    reason=skipped.reason,
                )
            for member in archive:
                member_path = _inside(archive_folder, member.path)
                path = Path(tmp) / "member"
                digest = hashlib.sha256()
                size = 0
                try:
                    with path.open("wb") as out:
                        for block in member.stream():
                            out.write(block)
                            digest.update(block)
                            size += len(block)
                except MemberUnreadable as exc:
                    yield UploadItem(file=member_path, status="rejected", reason=str(exc))
                    continue
                sub = Candidate(path, member_path, size, digest.hexdigest())
                yield from _admit_file(
                    session, settings, store, library_id, sub, user_id, written, in_archive=True
                )
    except BadArchive as exc:
        yield UploadItem(file=shown, status="rejected", reason=exc.reason)


def _inside(folder: str, path: str) -> str:
    return path if folder == "." else f"{folder}/{path}"


def _tmp(settings: Settings) -> Path:
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    return settings.tmp_dir


def _too_large(settings: Settings) -> str:
    return (
        f"larger than the upload limit of {settings.max_upload_bytes // (1024 * 1024)} MB; "
        "split it or ask an admin to raise ZHIKU_MAX_UPLOAD_BYTES"
    )
