"""E-mail (.eml, .msg): the body through unstructured, attachments as their own documents.

unstructured's own attachment handling re-dispatches through `partition()` with `auto`
strategies (which would pick `hi_res` for images), so attachments are pulled out here and
handed back to `parse_document` by the caller.
"""

from __future__ import annotations

import email
import email.policy
import io
from dataclasses import dataclass
from typing import Any

from core.types import ParsedElement
from ingest import elements as el_conv

MAX_ATTACHMENTS = 50


@dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes


def partition_body(data: bytes, kind: str) -> list[ParsedElement]:
    """The message body as elements, with the subject first as a title."""
    if kind == "msg":
        from unstructured.partition.msg import partition_msg

        found: list[Any] = partition_msg(file=io.BytesIO(data), process_attachments=False)
    else:
        from unstructured.partition.email import partition_email

        found = partition_email(file=io.BytesIO(data), process_attachments=False)
    body = el_conv.convert(found)
    subject = next((e.metadata.get("subject") for e in body if e.metadata.get("subject")), None)
    if subject is None:
        subject = _subject(data, kind)
    if subject:
        head = ParsedElement(
            category="Title", text=str(subject), level=0, metadata={"email_header": "subject"}
        )
        body.insert(0, head)
    return body


def _subject(data: bytes, kind: str) -> str | None:
    if kind != "eml":
        return None
    msg = email.message_from_bytes(data, policy=email.policy.default)
    subject = msg.get("subject")
    return str(subject).strip() if subject else None


def attachments(data: bytes, kind: str) -> list[Attachment]:
    """Named attachments, in order (at most MAX_ATTACHMENTS)."""
    found: list[Attachment] = []
    if kind == "msg":
        from oxmsg import Message

        for att in Message.load(io.BytesIO(data)).attachments:
            payload = att.file_bytes
            if payload:
                found.append(Attachment(att.file_name or "attachment", payload))
    else:
        msg = email.message_from_bytes(data, policy=email.policy.default)
        for part in msg.walk():
            if part.is_multipart():
                continue
            name = part.get_filename()
            disposition = part.get_content_disposition()
            if not name and disposition != "attachment":
                continue
            if part.get_content_maintype() == "image" and (
                disposition != "attachment" or part.get("content-id")
            ):
                continue  # pictures the HTML body shows inline (logos, avatars): decoration
            body = part.get_payload(decode=True)
            if isinstance(body, bytes) and body:
                found.append(Attachment(name or "attachment", body))
    return found[:MAX_ATTACHMENTS]
