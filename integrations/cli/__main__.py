"""``python -m leaseline.cli``: the ``leaseline`` command."""

from __future__ import annotations

from leaseline.cli import main  # the one imported module, not a second copy as __main__

if __name__ == "__main__":
    main()
