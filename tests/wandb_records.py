"""Read an offline wandb run back (test helper): its run record and final summary."""

from __future__ import annotations

import json
from pathlib import Path


def read_offline_run(directory: Path):
    """The run record and final summary of the one offline wandb run under ``directory``, read back with
    wandb's own record reader."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    (path,) = directory.glob("wandb/offline-run-*/run-*.wandb")
    store = datastore.DataStore()
    store.open_for_scan(str(path))
    run, summary = None, {}
    while (data := store.scan_data()) is not None:
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or item.nested_key[0]] = json.loads(item.value_json)
    return run, summary
