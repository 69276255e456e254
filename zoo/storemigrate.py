"""Moving a store of the first layout (`<name>/model.safetensors` beside its record) to blobs, losing nothing.

A file whose hash is its record's becomes the blob the record names. A file that disagrees with its record,
or has none (the first layout could be killed between the two renames), is kept in `.corrupt/` and named
in a note, never deleted; its record stays and `zoo verify` reports it. The first layout's temp files
(`.incoming.*.tmp`, `.record.*.tmp`, converted imports) belonged to writers that are gone: removed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

from zoo import durable, integrity
from zoo.checkpoint import sha256_file
from zoo.paths import QUARANTINE, RECORD_FILE, WEIGHTS_FILE, is_tag_folder

if TYPE_CHECKING:
    from zoo.store import Store


def _leftover(name: str) -> bool:
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".converted.safetensors"))


def migrate(store: Store) -> list[str]:
    """Migrate every folder of the first layout (the caller holds the store lock); notes on what was kept
    aside. Cheap when there is nothing to do: one look at each tag folder."""
    notes = []
    for folder in sorted(p for p in store.root.iterdir() if is_tag_folder(p)):
        for leftover in [p for p in folder.iterdir() if _leftover(p.name)]:
            leftover.unlink(missing_ok=True)
        legacy = folder / WEIGHTS_FILE
        if not legacy.is_file() or legacy.is_symlink():
            continue
        rec = store.record(folder.name)
        sha = sha256_file(legacy)
        if rec is not None and rec.sha256 == sha and rec.size == legacy.stat().st_size:
            blob = store.blob(sha)
            blob.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(legacy, durable.MODE)
            os.replace(legacy, blob)
            durable.fsync_dir(blob.parent)
            verified = list(integrity.identity(os.stat(blob)))
            durable.write_json(folder / RECORD_FILE, asdict(replace(rec, verified=verified)))
            continue
        aside = store.root / QUARANTINE / f"{folder.name}-unrecorded-{sha[:12]}.safetensors"
        said = f"its record says sha256 {rec.sha256[:12]}" if rec else "it had no record"
        notes.append(
            f"{folder.name}: its file (sha256 {sha[:12]}) was kept aside as {aside}: {said}. "
            f"If it is the version you want: python -m zoo import {aside} --name {folder.name}"
        )
        durable.move_aside(legacy, aside, f"{notes[-1]}\nNothing reads it from here and nothing deletes it; "
                                          f"delete this file and this note when you no longer need them.")
    return notes
