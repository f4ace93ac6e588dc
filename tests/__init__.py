"""leaseline test suite (a package so that ``-p tests.canary`` imports)."""
