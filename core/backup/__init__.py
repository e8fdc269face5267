"""Backups of a whole installation: the database, the originals, the index snapshots and the
instance secrets, in one directory with a manifest (`backup.json`) that lists every file with
its sha256. See docs/backup.md and docs/adr/0011-backup-and-restore.md.

`core.backup` holds the format, the database snapshot and the restore; taking the index
snapshots needs the index writer locks, so `workers.backup` composes the backup itself.
"""

from core.backup.archive import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    BackupError,
    BackupManifest,
    FileEntry,
    FileWriter,
    ProgressFn,
    final_dest,
    read_backup_manifest,
    verify_backup,
)
from core.backup.database import DatabaseSnapshot, open_snapshot
from core.backup.restore import RestoreResult, restore_backup

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "BackupError",
    "BackupManifest",
    "DatabaseSnapshot",
    "FileEntry",
    "FileWriter",
    "ProgressFn",
    "RestoreResult",
    "final_dest",
    "open_snapshot",
    "read_backup_manifest",
    "restore_backup",
    "verify_backup",
]
