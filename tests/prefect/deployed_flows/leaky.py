"""A flow whose task fails with the value it read in the exception: what the tests deploy.

    python leaky.py save BLOCK REF        # save the SecretReference block
    python leaky.py serve NAME            # flow.serve(): a runner in this process
    python leaky.py deploy NAME POOL      # a deployment on a process work pool

``PREFECT_RESULTS_PERSIST_BY_DEFAULT=true``: the failed task's exception is pickled into result
storage (``PREFECT_LOCAL_STORAGE_PATH``), where the tests look for the value.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

from leaseline.prefect import SecretReference
from prefect import flow, task


@task
def call_upstream(block: str) -> None:
    key = SecretReference.load(block).get()
    b64 = base64.b64encode(key.encode()).decode()
    raise ValueError(f"upstream rejected key {key} (sent as {b64})")


@flow
def leaky(block: str = "deployed-key") -> None:
    call_upstream(block)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "save":
        SecretReference(ref=args[1]).save(args[0], overwrite=True)
    elif command == "serve":
        leaky.serve(name=args[0])
    elif command == "deploy":
        here = Path(__file__).resolve().parent
        leaky.from_source(source=str(here), entrypoint="leaky.py:leaky").deploy(  # type: ignore[attr-defined]
            name=args[0], work_pool_name=args[1], build=False, push=False
        )
    else:
        raise SystemExit(f"unknown command {command}")
