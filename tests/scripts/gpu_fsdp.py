"""``check_fsdp2_one_device``'s process: FSDP2 vs ddp on one device (``ARGV[0]``: ``gpu`` or ``cpu``).

Writes ``result_rank0.json`` with the check's summary; a failed check exits non-zero with its message.
"""

from __future__ import annotations

from pathlib import Path

from tests.ddp_scripts._common import dump, run
from tests.gpu.sharded_checks import fsdp2_one_device


def main(argv: list[str]) -> None:
    summary = fsdp2_one_device(Path("."), argv[0] if argv else "gpu")
    dump({"summary": summary}, rank=0)


if __name__ == "__main__":
    run(main)
