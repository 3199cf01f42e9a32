"""Entry of the local provider: a worker process inside the bundle's own environment.

It speaks JSON lines: one request per line on stdin, one reply per line on the
original stdout. The function's own prints are sent to stderr (the log), so they
can never corrupt a reply. The process loads the bundle once and then serves
requests until stdin closes, which is what keeps a worker warm.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from datetime import datetime
from typing import Any, TextIO

from . import core, fanout


def _reply(channel: TextIO, message: dict[str, Any]) -> None:
    channel.write(json.dumps(message, default=str) + "\n")
    channel.flush()


def _handle(loaded: core.Loaded, request: dict[str, Any]) -> dict[str, Any]:
    if "map" in request:  # one shard of a map run (runtimes/fanout.py)
        try:
            return {"map": fanout.run_shard(loaded, request["map"])}
        except fanout.ShardRequestError as error:
            return {"http_status": 400, "body": core.bad_request(str(error))}
    payload: Any = core.NO_PAYLOAD
    if "payload_file" in request:
        import pandas as pd

        payload = pd.read_parquet(request["payload_file"])
    elif "payload" in request:
        payload = request["payload"]
    fire_time = request.get("fire_time")
    try:
        result = core.run(
            loaded,
            trigger=request.get("trigger", "manual"),
            payload=payload,
            output=request.get("output"),
            run_id=request.get("run_id"),
            fire_time=datetime.fromisoformat(fire_time) if fire_time else None,
            event_id=request.get("event_id", ""),
            params=request.get("params"),
            overlap=request.get("overlap", True),
        )
    except core.PayloadError as error:
        return {"http_status": 400, "body": core.bad_request(error)}
    except Exception as error:
        # Something outside the run failed (core.run answers the user's errors
        # and a store that refuses its files itself): answer with it and stay
        # warm, rather than dying and costing the next request a cold start.
        # The reply has no record, so the host records the run.
        traceback.print_exc()
        return {
            "http_status": 500,
            "body": {
                "run_id": request.get("run_id"),
                "status": "failed",
                "error": {"type": type(error).__name__, "message": str(error)},
            },
        }
    http_status, body = core.response_body(result)
    # committed False: the store refused the record; the host keeps it (spool).
    return {
        "http_status": http_status,
        "body": body,
        "record": result.record,
        "committed": result.committed,
    }


def main() -> None:
    bundle_dir = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        loaded = core.load(bundle_dir)
    except Exception as error:
        _reply(channel, {"ready": False, "error": f"{type(error).__name__}: {error}"})
        raise SystemExit(1) from error
    _reply(channel, {"ready": True, "code_hash": loaded.manifest.code_hash})
    for line in sys.stdin:
        if not line.strip():
            continue
        _reply(channel, _handle(loaded, json.loads(line)))


if __name__ == "__main__":
    main()
