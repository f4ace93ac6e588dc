"""``python -m leaseline.scan [PATH...]``: the scan command without the main CLI."""

from __future__ import annotations

from ..cli.scan import main

if __name__ == "__main__":
    main()
