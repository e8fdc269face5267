"""Office helpers: encryption checks and LibreOffice conversion of legacy formats."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from core.errors import BadDocument

PASSWORD_REASON = "password-protected; remove the password and upload again"
LIBREOFFICE_TIMEOUT = 180.0


def is_encrypted_office(data: bytes) -> bool:
    """True for password-protected DOC/XLS/PPT and for OOXML wrapped in an encrypted envelope."""
    if not data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return False  # a plain OOXML zip cannot be encrypted (only "protected" against edits)
    try:
        import olefile

        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            if ole.exists("EncryptedPackage") or ole.exists("EncryptionInfo"):
                return True
    except Exception:  # not a readable OLE file: the parser will say it is corrupt
        return False
    try:
        import msoffcrypto

        return bool(msoffcrypto.OfficeFile(io.BytesIO(data)).is_encrypted())
    except Exception:  # msoffcrypto does not know every OLE flavour (e.g. .msg)
        return False


def soffice_path() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # soffice forks soffice.bin; we started it in its own session, so the group is ours.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def convert_with_libreoffice(
    data: bytes, source_ext: str, target_ext: str, *, timeout: float = LIBREOFFICE_TIMEOUT
) -> bytes:
    """Convert e.g. a .doc to .docx with headless LibreOffice in a private profile."""
    soffice = soffice_path()
    if soffice is None:
        raise BadDocument(
            f"legacy .{source_ext} files need LibreOffice, which is not installed: install "
            f"libreoffice, or save the file as .{target_ext} and upload again"
        )
    with tempfile.TemporaryDirectory(prefix="zhiku-lo-") as tmp:
        work = Path(tmp)
        source = work / f"document.{source_ext}"
        source.write_bytes(data)
        outdir = work / "out"
        cmd = [
            soffice,
            "--headless",
            "--invisible",
            "--norestore",
            "--nologo",
            "--nodefault",
            "--nolockcheck",
            "--nofirststartwizard",
            f"-env:UserInstallation={(work / 'profile').as_uri()}",
            "--convert-to",
            target_ext,
            "--outdir",
            str(outdir),
            str(source),
        ]
        env = {**os.environ, "HOME": tmp, "SAL_USE_VCLPLUGIN": "svp"}
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp,
            env=env,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise BadDocument(
                f"could not be read: LibreOffice did not finish converting this .{source_ext} "
                f"file within {timeout:.0f}s (it may be damaged or very large); save it as "
                f".{target_ext} and upload again"
            ) from None
        finally:
            _kill_group(proc)  # leftovers of the group, if any
        result = outdir / f"document.{target_ext}"
        if not result.is_file() or result.stat().st_size == 0:
            detail = err.decode("utf-8", "replace").strip().splitlines()
            tail = detail[-1] if detail else f"exit code {proc.returncode}"
            raise BadDocument(
                f"could not be read: looks corrupt (LibreOffice could not convert this "
                f".{source_ext} file: {tail[:200]})"
            )
        return result.read_bytes()
